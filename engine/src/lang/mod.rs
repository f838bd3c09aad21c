//! The `.flow` language: grammar, parser, formatter and checks.
