"""`python -m skills_cli.training.algorithms.dpo [--config dpo.yaml] ++key=value ...`: the DPO trainer in this job."""

import sys

from skills_cli.training.algorithms.dpo.trainer import main

sys.exit(main())
