"""megatron-core support for the megatron policy backend and `ns convert`: HF <-> GPTModel weight mapping
(`bridge`), model building under tensor/pipeline parallelism (`model`), the CPU shims (`cpu`) and
megatron distributed checkpoints (`dist_ckpt`). Importing megatron.core takes seconds: modules here import it
inside functions."""
