"""`python -m skills_cli.training.algorithms.ppo [--config ppo.yaml] ++key=value ...`: the PPO trainer in this job."""

import sys

from skills_cli.training.algorithms.ppo.trainer import main

sys.exit(main())
