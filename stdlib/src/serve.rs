//! `flow serve`: an OpenAI-compatible server over the model runtime (not yet written).
