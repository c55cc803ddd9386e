"""The parts every trainer shares: checkpoints, optimizer and scheduler, chat data and batching, losses, metrics
and trackers, parallelism (FSDP2/TP, sequence parallel), LoRA, meta-device init, model loading, the
tokenizer, and the one-trainer-per-output_dir lock."""
