"""Layer 2, generation in jobs: the generation program (`generate`: prompts from a JSONL file to an OpenAI-compatible
server, resumable by sample key), its client, chunk merging and sample logging; `engine/`, the one inference engine
core (scheduling, sampling, stop/eos) shared by the embedded HTTP server (`server/`) and GRPO rollouts."""
