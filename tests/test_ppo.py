"""PPO with a critic end to end on CPU: it raises the mean reward of the SFT-warmed arith model (trend over
windows, fixed seed), resumes exactly (policy, critic and the adaptive KL coefficient), exports the critic as
an HF sequence-classification model, runs from seed 002's verl keys, and `ns train ppo` renders seed 002's
command (and refuses bad input with one error line) before submission."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
from arith_models import FLOAT32, SEQUENCE, warmed_model
from conftest import run_ns
from test_ppo_units import SEED_002_KEYS
from test_sft_support import read_metrics

from skills_cli.common.overrides import load_config
from skills_cli.training.algorithms.ppo.config import PPOConfig
from skills_cli.training.algorithms.ppo.trainer import run
from skills_cli.training.algorithms.ppo.verl_keys import translate_verl_overrides
from skills_cli.training.components.checkpoint import read_trainer_state, step_checkpoints
from skills_cli.training.trainer import DEADLINE_ENV

# the first test to call warmed_model() pays the shared SFT warm-up (minutes on busy shared cores)
pytestmark = pytest.mark.timeout(1500)
GSM8K_TEST = Path("/work/shared/data/benchmarks/gsm8k/test.jsonl")
WINDOW = 5
MARGIN = 0.1


def ppo_config(output: Path, *overrides: str, warmed: dict | None = None) -> PPOConfig:
    warmed = warmed or warmed_model()
    return load_config(PPOConfig, [
        f"++policy.model_name={warmed['model']}", f"++data.train_data={warmed['problems']}",
        f"++data.prompt_config={warmed['prompt']}", f"++output_dir={output}", SEQUENCE, FLOAT32,
        "++critic.precision=float32", "++policy.generation.temperature=0.7", "++policy.optimizer.kwargs.weight_decay=0.0",
        *overrides,
    ], where="ppo")  # fmt: skip


def test_ppo_raises_the_mean_reward_of_a_warmed_up_model(tmp_path):
    """The GRPO learning test's setting (32 fixed problems x 8 samples at T=0.7, lr 5e-4) with a critic at 1e-3
    and whitened GAE advantages (gamma = lam = 1), no KL."""
    output = tmp_path / "ppo"
    run(ppo_config(output, "++checkpointing.enabled=false", "++ppo.num_prompts_per_step=32",
                   "++ppo.num_generations_per_prompt=8", "++ppo.max_num_steps=20", "++ppo.max_num_epochs=20",
                   "++policy.train_global_batch_size=256", "++policy.train_micro_batch_size=64",
                   "++critic.train_micro_batch_size=64", "++policy.generation.max_new_tokens=32",
                   "++policy.optimizer.kwargs.lr=5e-4", "++critic.optimizer.kwargs.lr=1e-3",
                   "++algorithm.use_kl_in_reward=false"))  # fmt: skip
    rows = read_metrics(output)
    rewards = [row["train/reward"] for row in rows]
    assert len(rewards) == 20 and [row["critic/score/mean"] for row in rows] == rewards
    first, last = statistics.fmean(rewards[:WINDOW]), statistics.fmean(rewards[-WINDOW:])
    shown = " ".join(f"{r:.2f}" for r in rewards)
    assert 0.2 < first < 0.8, f"the warm-up should leave room to learn both ways; rewards: {shown}"
    assert last > first + MARGIN, f"mean reward {first:.3f} (first {WINDOW} steps) -> {last:.3f}; rewards: {shown}"
    # the critic learns the value of the states: its loss falls and it explains part of the returns' variance
    losses = [row["critic/vf_loss"] for row in rows]
    assert statistics.fmean(losses[-WINDOW:]) < statistics.fmean(losses[:WINDOW])
    assert statistics.fmean(row["critic/vf_explained_var"] for row in rows[-WINDOW:]) > 0.1


RESUME = ("++ppo.num_prompts_per_step=8", "++ppo.num_generations_per_prompt=2", "++ppo.max_num_steps=3",
          "++ppo.max_num_epochs=5", "++ppo.ppo_epochs=2", "++policy.train_global_batch_size=8",
          "++policy.train_micro_batch_size=8", "++critic.train_micro_batch_size=8",
          "++policy.generation.max_new_tokens=16", "++policy.optimizer.kwargs.lr=5e-4",
          "++critic.optimizer.kwargs.lr=1e-3", "++algorithm.kl_ctrl.type=adaptive", "++algorithm.kl_ctrl.kl_coef=0.05",
          "++algorithm.kl_ctrl.target_kl=0.001", "++algorithm.kl_ctrl.horizon=100", "++checkpointing.save_period=1",
          "++checkpointing.keep_last_k=1", "++algorithm.gamma=0.99", "++algorithm.lam=0.95")  # fmt: skip
SAME_KEYS = ("train/reward", "train/loss", "actor/pg_loss", "actor/ppo_kl", "critic/vf_loss", "critic/values/mean",
             "critic/advantages/max", "actor/reward_kl_penalty", "actor/reward_kl_penalty_coeff")  # fmt: skip


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ppo-whole")
    run(ppo_config(output, *RESUME))
    return output


def assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys() and all(left[k].equal(right[k]) for k in left), f"{a} != {b}"


def test_checkpoints_hold_the_policy_the_critic_and_the_kl_coefficient(whole_run):
    assert [step for step, _ in step_checkpoints(whole_run / "checkpoints")] == [3]
    # the critic keeps one more: the previous complete step survives a job killed between the two saves
    assert [step for step, _ in step_checkpoints(whole_run / "checkpoints" / "critic")] == [2, 3]
    rows = read_metrics(whole_run)
    coefficients = [row["actor/reward_kl_penalty_coeff"] for row in rows]
    # step 1 samples from the reference itself: KL ~0, below target_kl, so the error clips at -0.2 and the
    # coefficient shrinks by 0.2 x 16 sequences / horizon 100
    assert coefficients[:2] == pytest.approx([0.05, 0.05 * (1 - 0.2 * 16 / 100)])
    assert abs(rows[0]["actor/reward_kl_penalty"]) < 1e-4
    assert read_trainer_state(whole_run / "checkpoints" / "step_3")["kl_coef"] not in coefficients
    from transformers import AutoModelForSequenceClassification

    critic = AutoModelForSequenceClassification.from_pretrained(whole_run / "critic_hf")
    assert critic.config.num_labels == 1 and critic.config.pad_token_id is not None
    assert (whole_run / "final_hf" / "model.safetensors").is_file()
    assert all(rows[0][key] is not None for key in ("actor/entropy", "critic/vf_clipfrac", "response_length/mean"))


def test_deadline_stop_then_resume_reproduces_the_run(whole_run, tmp_path, monkeypatch):
    """Stopped by the deadline after step 1, the rerun loads the policy, the critic and the KL coefficient of
    step 1 and continues exactly as the uninterrupted run."""
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() + 600))
    config = ppo_config(tmp_path, *RESUME, "++checkpointing.save_before_deadline_seconds=900")
    assert run(config)["status"] == "stopped_before_deadline"
    monkeypatch.delenv(DEADLINE_ENV)
    summary = run(config)
    assert summary["status"] == "finished" and summary["resumed_from_step"] == 1
    got, expected = read_metrics(tmp_path), read_metrics(whole_run)
    assert [row["step"] for row in got] == [1, 2, 3]
    for a, b in zip(got, expected, strict=True):
        assert {k: a[k] for k in SAME_KEYS} == pytest.approx({k: b[k] for k in SAME_KEYS}, rel=1e-5, abs=1e-7)
    assert_same_weights(tmp_path / "final_hf", whole_run / "final_hf")
    assert_same_weights(tmp_path / "critic_hf", whole_run / "critic_hf")


def test_a_step_without_its_critic_is_not_resumed(whole_run, tmp_path):
    import shutil

    shutil.copytree(whole_run / "checkpoints" / "step_3", tmp_path / "checkpoints" / "step_3")
    with pytest.raises(Exception, match="has no critic checkpoint"):
        run(ppo_config(tmp_path, *RESUME, "++ppo.max_num_steps=4"))


MEGATRON = ("++backend=megatron", "++policy.megatron_cfg.enabled=true", "++policy.dtensor_cfg.enabled=false",
            "++critic.megatron_cfg.enabled=true", "++critic.dtensor_cfg.enabled=false")  # fmt: skip


def test_megatron_actor_and_critic_take_the_dtensor_first_step_and_resume(tmp_path):
    """Both models on megatron (the critic's scalar head is its own output layer): the first step's actor and
    critic losses, values and advantages are the dtensor run's (same weights, same seeded rollouts); a resume from
    step 1's megatron checkpoints (policy and critic) reproduces the straight megatron run's step 2. No KL in the
    reward: at the start the actor is the reference, and whitening would blow the backends' 1e-8 logprob
    differences up to unit advantages where every reward is equal."""
    pytest.importorskip("megatron.core")
    keys = (*RESUME, "++ppo.max_num_steps=2", "++checkpointing.keep_last_k=2", "++algorithm.use_kl_in_reward=false",
            "++policy.generation.max_new_tokens=32")  # fmt: skip
    straight, resumed = tmp_path / "megatron", tmp_path / "resumed"
    run(ppo_config(tmp_path / "dtensor", *keys))
    run(ppo_config(straight, *keys, *MEGATRON))
    same = [key for key in SAME_KEYS if "kl_penalty" not in key]
    ours, theirs = read_metrics(straight)[0], read_metrics(tmp_path / "dtensor")[0]
    assert theirs["train/reward"] > 0 and theirs["critic/advantages/max"] > 0
    assert {k: ours[k] for k in same} == pytest.approx({k: theirs[k] for k in same}, rel=1e-4, abs=1e-6)
    import shutil

    for part in ("step_1", "critic/step_1"):
        shutil.copytree(straight / "checkpoints" / part, resumed / "checkpoints" / part)
    assert run(ppo_config(resumed, *keys, *MEGATRON))["resumed_from_step"] == 1
    (got,) = read_metrics(resumed)
    expected = read_metrics(straight)[1]
    assert {k: got[k] for k in same} == pytest.approx({k: expected[k] for k in same}, rel=1e-5, abs=1e-7)
    assert_same_weights(resumed / "critic_hf", straight / "critic_hf")


def test_a_run_from_seed_002_verl_keys(tmp_path):
    """Two steps on GSM8K problems with seed 002's keys (scaled down) as `ns train ppo` translates them."""
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:8]]
    problems = tmp_path / "gsm8k.jsonl"
    problems.write_text("".join(json.dumps(row) + "\n" for row in rows))
    warmed = warmed_model()
    keys = ["data.train_batch_size=4", "data.max_prompt_length=600", "data.max_response_length=16",
            "actor_rollout_ref.actor.optim.lr=1e-6", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1", "critic.optim.lr=1e-5",
            "critic.ppo_micro_batch_size_per_gpu=1", f"critic.model.path={warmed['model']}",
            "algorithm.kl_ctrl.kl_coef=0.001", "trainer.logger=['console']", "+trainer.val_before_train=False",
            "trainer.default_hdfs_dir=null", "trainer.save_freq=1", "trainer.total_training_steps=2"]  # fmt: skip
    config = load_config(PPOConfig, [f"++policy.model_name={warmed['model']}", f"++data.train_data={problems}",
                                     f"++output_dir={tmp_path / 'out'}", f"++data.prompt_config={warmed['prompt']}", FLOAT32, "++critic.precision=float32",
                                     *translate_verl_overrides(keys)], where="ppo")  # fmt: skip
    assert config.policy.max_total_sequence_length == 616 and config.policy.train_global_batch_size == 2
    summary = run(config)
    assert summary["status"] == "finished" and summary["optimizer_steps_per_step"] == 2
    got = read_metrics(tmp_path / "out")
    assert [row["step"] for row in got] == [1, 2] and all(row["critic/lr"] == 1e-5 for row in got)
    assert all(row["actor/reward_kl_penalty_coeff"] == 0.001 for row in got)


def test_ns_train_ppo_renders_seed_002_command(tmp_path):
    from skills_cli.inference.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    common = ["train", "ppo", "--hf_model", str(model), "--training_data", str(GSM8K_TEST), "--output_dir",
              str(tmp_path / "out"), "--num_gpus", "1", "--dry_run"]  # fmt: skip
    text = run_ns(*common, *SEED_002_KEYS, check=True).stdout
    assert "-m skills_cli.training.algorithms.ppo" in text
    for flag in ("++critic.optimizer.kwargs.lr=1e-5", "++algorithm.kl_ctrl.kl_coef=0.001",
                 "++logger.swanlab_enabled=true", "++policy.max_total_sequence_length=768",
                 "++policy.train_global_batch_size=64", "++critic.model_name=Qwen/Qwen2.5-0.5B-Instruct"):  # fmt: skip
        assert flag in text, flag
    refused = run_ns(*common, *SEED_002_KEYS, "trainer.n_gpus_per_node=1")
    assert refused.returncode == 2 and "trainer.n_gpus_per_node: set it with --num_gpus" in refused.stderr
    bad_kl = run_ns(*common, "algorithm.kl_ctrl.target_kl=-1")
    assert bad_kl.returncode == 2 and "algorithm.kl_ctrl.target_kl" in bad_kl.stderr
    assert len([line for line in bad_kl.stderr.splitlines() if line.startswith("error:")]) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 7}))
    vocab = run_ns(*common, f"critic.model.path={other}")
    assert vocab.returncode == 2 and "has a vocabulary of 7 tokens" in vocab.stderr
