"""`python -m skills_cli.training.algorithms.sft [--config sft.yaml] ++key=value ...`: the SFT trainer in this job."""

import sys

from skills_cli.training.algorithms.sft.trainer import main

sys.exit(main())
