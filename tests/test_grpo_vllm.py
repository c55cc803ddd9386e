"""GRPO with colocated vLLM rollouts (`++policy.generation.backend=vllm`), for real on CPU (vLLM's CPU build, fp32).

vLLM lives in its own environment, so the trainer runs in a subprocess under the interpreter in
$SKILLS_VLLM_PYTHON (the test script sets it; conftest `vllm_python`: missing, the tests fail in CI), on exactly the configs the torch-engine tests use
(`test_grpo_train.grpo_config`, the learning test's run) given as `--config run.yaml`, with the backend
switched to vllm. The learning run is `python -m skills_cli.training.algorithms.grpo`, as a job runs it. One
probed run covers the logprob agreement and the refit: there the trainer is a subclass that measures, around
every refit, how far the engine's sampling logprobs are from the trainer's own recomputation on the same
tokens (it adds measurements, nothing else).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest
import test_grpo_learning
from conftest import vllm_python
from test_grpo_learning import warmed_up  # noqa: F401 (the learning test's fixture: the SFT warm-up)
from test_grpo_train import NEMO_RL_CHECKS, grpo_config, problems, rows_of

from skills_cli.common.typed_config import to_dict
from skills_cli.training import check_metrics

pytestmark = [
    pytest.mark.timeout(1200),  # a vLLM start-up (20-60 s) and CPU training on 2 shared cores
]
ROOT = Path(__file__).resolve().parent.parent
VLLM = ["++policy.generation.backend=vllm"]
MAX_MULT_PROB_ERROR = 1.01  # the bar for fp32
REFIT_TOLERANCE = 1e-4  # max |vLLM logprob - trainer logprob| after a refit: both fp32, only kernels differ


def run_in_vllm_env(program: list[str], config, output_dir: Path, timeout: int, **env: str) -> None:
    """`program` (after the interpreter) with `config` written to `output_dir`/run.yaml and given as
    `--config run.yaml ++policy.generation.backend=vllm`, `env` added to the environment; fails with the
    program's stderr tail."""
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "run.yaml"
    config_file.write_text(json.dumps(to_dict(config)))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **env}  # tests/: reward functions
    argv = [vllm_python(), *program, "--config", str(config_file), *VLLM]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


# ---- the probe: runs in the vLLM environment -------------------------------------------------------------------


def refit_probe(argv: list[str], report: str) -> None:
    """The GRPO trainer, run to the end, whose every refit is bracketed by one measurement: fixed-seed rollouts
    sampled by the engine, their logprobs recomputed by the trainer, the largest gap over all tokens."""
    import json
    from pathlib import Path

    from skills_cli.common.overrides import load_config_from_argv
    from skills_cli.training.algorithms.grpo.config import GRPOConfig
    from skills_cli.training.algorithms.grpo.trainer import GRPOTrainer
    from skills_cli.training.trainer import run_trainer

    class RefitProbe(GRPOTrainer):
        measurements: list = []

        def refit(self) -> None:
            before = self.engine_gap()
            super().refit()
            self.measurements.append({"step": self.step, "before": before, "after": self.engine_gap()})

        def engine_gap(self) -> float:
            rollouts = self.generate(self.problems[:2], 2, seed=12345, greedy=False)
            self.compute_logprobs(rollouts)  # the trainer's logprobs of the engine's tokens, as prev_logprobs
            return max(
                abs(g - p) for r in rollouts for g, p in zip(r.generation_logprobs, r.prev_logprobs, strict=True)
            )

    run_trainer(RefitProbe, load_config_from_argv(GRPOConfig, argv, where="grpo"))
    rank = os.environ.get("RANK", "0")
    Path(f"{report}.rank{rank}").write_text(json.dumps(RefitProbe.measurements))


def probe_program(root: Path, ranks: int) -> list[str]:
    """torchrun over `ranks` ranks of a script that is `refit_probe` (each rank reports to refits.json.rankN)."""
    script = root / "refit_probe.py"
    call = f"refit_probe(sys.argv[1:], {str(root / 'refits.json')!r})"
    script.write_text(f"import os\nimport sys\n\n\n{inspect.getsource(refit_probe)}\n\n{call}\n")
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", str(script)]


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> dict:
    """3 steps of test_grpo_train's config (2 optimizer steps each, lr 1e-3, the KL penalty on) with vLLM, on
    two data-parallel ranks (torchrun), each with its own engine inside the trainer's process group."""
    root = tmp_path_factory.mktemp("grpo-vllm")
    train, _ = problems(root)
    config = grpo_config(root / "run", train, "++grpo.max_num_steps=3", "++checkpointing.enabled=false",
                         "++env.reward_function=grpo_rewards:digit_count")  # fmt: skip
    # one thread per rank, as the torch-engine torchrun test runs
    run_in_vllm_env(probe_program(root, ranks=2), config, root / "run", timeout=900, OMP_NUM_THREADS="1")
    refits = [json.loads((root / f"refits.json.rank{rank}").read_text()) for rank in range(2)]
    return {"root": root / "run", "rows": rows_of(root / "run"), "refits": refits}


def test_vllm_sampling_logprobs_agree_with_the_trainers(probed):
    rows = probed["rows"]
    assert [row["step"] for row in rows] == [1, 2, 3]
    errors = [row["train/token_mult_prob_error"] for row in rows]
    assert all(1.0 <= error <= MAX_MULT_PROB_ERROR for error in errors), errors
    assert check_metrics.check(probed["root"] / "logs" / "metrics.json", NEMO_RL_CHECKS)
    assert rows[-1]["train/kl_penalty"] > 0  # the policy moved away from the weights vLLM started with


def test_every_step_refits_the_engine_with_the_updated_weights(probed):
    """Before each step's refit the engine still samples from the previous weights (after the first step, its
    logprobs are off the trainer's); after it they agree to fp32 kernel noise. The first refit finds the
    starting weights already in place."""
    for refits in probed["refits"]:  # each rank's engine
        assert [refit["step"] for refit in refits] == [0, 1, 2]
        assert all(refit["after"] < REFIT_TOLERANCE for refit in refits), refits
        assert refits[0]["before"] < REFIT_TOLERANCE, refits
        assert all(refit["before"] > 100 * REFIT_TOLERANCE for refit in refits[1:]), refits


@pytest.mark.timeout(3000)
def test_grpo_with_vllm_rollouts_raises_the_mean_reward(warmed_up, monkeypatch, tmp_path):  # noqa: F811
    """test_grpo_learning's test itself (its warm-up, config and assertions), its GRPO run redirected to the
    trainer in the vLLM environment with vLLM rollouts."""

    def run_with_vllm(config) -> None:
        run_in_vllm_env(["-m", "skills_cli.training.algorithms.grpo"], config, Path(config.output_dir), timeout=1800)

    monkeypatch.setattr(test_grpo_learning, "run_grpo", run_with_vllm)
    test_grpo_learning.test_grpo_raises_the_mean_reward_of_a_warmed_up_model(warmed_up, tmp_path)
