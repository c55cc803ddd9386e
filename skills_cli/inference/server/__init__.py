"""Model servers that run inside jobs. `hf_server` is the embedded transformers-backed OpenAI-compatible server."""
