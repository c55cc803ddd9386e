#!/usr/bin/env python3
"""Assertions over a training run's metrics (see skills_cli/training/check_metrics.py for the expression language).

tools/check_metrics.py runs/grpo/logs/metrics.json 'median(data["train/token_mult_prob_error"]) < 1.05'
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from skills_cli.training.check_metrics import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
