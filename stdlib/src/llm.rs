//! Chat backends shared by `annotate` and `judge`: an OpenAI-compatible HTTP client and the local model runtime (not yet written).
