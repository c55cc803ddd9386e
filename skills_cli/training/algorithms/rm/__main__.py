"""`python -m skills_cli.training.algorithms.rm [--config rm.yaml] ++key=value ...`: the reward-model trainer."""

import sys

from skills_cli.training.algorithms.rm.trainer import main

sys.exit(main())
