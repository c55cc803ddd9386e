"""`python -m skills_cli.training.algorithms.grpo [--config grpo.yaml] ++key=value ...`: the GRPO trainer in this job."""

import sys

from skills_cli.training.algorithms.grpo.trainer import main

sys.exit(main())
