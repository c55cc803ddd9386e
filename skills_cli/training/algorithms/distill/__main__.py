"""`python -m skills_cli.training.algorithms.distill [--config distill.yaml] ++key=value ...`: the on-policy
distillation trainer in this job."""

import sys

from skills_cli.training.algorithms.distill.trainer import main

sys.exit(main())
