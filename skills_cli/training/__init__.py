"""In-job training: the shared run skeleton (`trainer.py`), the shared config sections (`config.py`),
components every trainer uses (`components/`: checkpoints, optimizer, data and batching, losses, metrics,
parallelism, LoRA), the model-parallel policy backends (`policy/`, `megatron/`), the algorithms
(`algorithms/sft`, `algorithms/grpo`, registered in `algorithms.ALGORITHMS`), and tools that users run
directly (`prepare_data`, `convert`, `average_checkpoints`, `check_metrics`)."""
