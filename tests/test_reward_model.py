"""Reward models as consumers: the in-process scorer against HF, the scoring command on result files, the
rm_best@k / rm_majority@k metrics, `ns eval --reward_model`, and a trained reward model as GRPO's only reward.

The scorer's model is a tiny sequence-classification model whose `score` weights are set by hand, so every score
is known: the decoder's last hidden state at the sequence's last token, dotted with those weights. The learning
test trains reward models with `ns train rm`'s trainer on pairs prepare_data builds from the policy's own graded
samples and uses them as the only GRPO reward (math weight 0); the math-graded accuracy, logged as a diagnostic,
must rise over windows of steps with fixed seeds.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
from arith_models import FLOAT32, NO_CHECKPOINTS, SEQUENCE, warmed_model
from conftest import benchmarks_dir, run_ns
from test_sft_support import tiny_model, write_jsonl

from skills_cli.common.artifacts import EVALUATION, read_json_artifact
from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl
from skills_cli.common.overrides import load_config
from skills_cli.evaluation.summarize import summarize_benchmark
from skills_cli.inference import reward_model as scoring
from skills_cli.inference.reward_model import Pair, RewardModel
from skills_cli.training.algorithms import ALGORITHMS
from skills_cli.training.algorithms.grpo.config import EnvConfig, GRPOConfig, MathEnvConfig, RewardModelEnvConfig
from skills_cli.training.algorithms.grpo.data import StepScores, mixed_rewards, sigmoid, standardized

QUESTION = [{"role": "user", "content": "What is 2 * 3?"}]
BRIEF = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 4 * 7?"}]
PAIRS = [Pair(QUESTION, "6"), Pair(QUESTION, "2 * 3 = 6. The answer is \\boxed{6}."), Pair(BRIEF, "28"),
         Pair(BRIEF, "4 * 7 = 2", ended=False), Pair(QUESTION, "")]  # fmt: skip


# ---- the tiny reward model ---------------------------------------------------------------------------------------


def score_weights(hidden_size: int):
    import torch

    return torch.linspace(-1.0, 1.0, hidden_size).reshape(1, hidden_size)


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    """tiny_model() with a scalar head whose weights are `score_weights`, saved as HF saves it."""
    import torch

    from skills_cli.inference.model_loading import load_tokenizer
    from skills_cli.training.components import heads

    base = tiny_model()
    model = heads.from_pretrained(base, "scalar")
    with torch.no_grad():
        model.score.weight.copy_(score_weights(model.config.hidden_size))
    out = tmp_path_factory.mktemp("rm") / "tiny-rm"
    model.save_pretrained(out)
    load_tokenizer(base).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def scorer(rm_dir) -> RewardModel:
    return RewardModel.from_pretrained(str(rm_dir), device="cpu", batch_size=3)


def known_score(decoder, ids: list[int]) -> float:
    """The decoder's last hidden state of the unpadded sequence, dotted with the hand-set weights."""
    import torch

    with torch.no_grad():
        hidden = decoder(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    return float(hidden @ score_weights(hidden.shape[0])[0])


def test_scores_are_the_hand_set_head_at_the_last_token_as_hf_reads_them(rm_dir, scorer):
    import torch
    from transformers import AutoModelForSequenceClassification

    scores = scorer.score(PAIRS)
    hf = AutoModelForSequenceClassification.from_pretrained(str(rm_dir)).eval()
    for pair, score in zip(PAIRS, scores, strict=True):
        ids = scorer.token_ids(pair)
        with torch.no_grad():
            alone = float(hf(input_ids=torch.tensor([ids])).logits[0, 0])
        assert score == pytest.approx(alone, abs=1e-5)
        assert score == pytest.approx(known_score(hf.model, ids), abs=1e-4)
    assert len(set(round(s, 4) for s in scores)) == len(scores)  # the pairs really differ
    # batching (sorted by length, right-padded) changes nothing
    one_at_a_time = RewardModel(scorer.model, scorer.tokenizer, batch_size=1).score(PAIRS)
    assert one_at_a_time == pytest.approx(scores, abs=1e-5)


def test_pairs_are_tokenized_as_the_rm_trainer_tokenizes_its_pairs(scorer):
    from skills_cli.training.components.preferences import PreferenceDataConfig, tokenize_pair

    for pair in [p for p in PAIRS if p.ended and p.response]:
        row = {"prompt": pair.prompt, "chosen": pair.response, "rejected": "something else"}
        chosen, _, _ = tokenize_pair(scorer.tokenizer, row, PreferenceDataConfig(), "test")
        assert scorer.token_ids(pair) == chosen.input_ids
    # an unfinished response: the same opening, the reply without the end of turn
    finished, cut = scorer.token_ids(Pair(BRIEF, "4 * 7 = 2")), scorer.token_ids(PAIRS[3])
    end_of_turn = scorer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn in finished and end_of_turn not in cut[len(cut) - 3 :]
    assert scorer.tokenizer.decode(cut).endswith("<|im_start|>assistant\n4 * 7 = 2")


def test_a_causal_lm_or_a_missing_folder_is_refused_before_loading(tmp_path):
    with pytest.raises(UserError, match=r"is LlamaForCausalLM, not a reward model"):
        RewardModel.from_pretrained(tiny_model())
    with pytest.raises(UserError, match=r"no model folder at .*/nowhere"):
        RewardModel.from_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    assert scoring.reward_model_problem(str(tmp_path / "empty")).endswith("has no config.json (not an HF model folder)")
    two = {"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "a", "1": "b"}}
    assert scoring.architecture_problem(two, "m") == "m has 2 labels; a reward model has one score"


# ---- the scoring command ---------------------------------------------------------------------------------------


def result_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"p{i}", "problem": f"What is {i} * 3?", "expected_answer": str(3 * i),
             "generation": f"{i} * 3 = {3 * i + rng.choice([0, 1])}."} for i in range(count)]  # fmt: skip


def test_the_command_adds_scores_atomically_and_a_rerun_scores_only_what_is_missing(rm_dir, scorer, tmp_path, capsys):
    from skills_cli.prompts.prompt_config import load_prompt_config

    results = tmp_path / "results"
    files = [Path(write_jsonl(results / f"output-rs{seed}.jsonl", result_rows(5, seed))) for seed in (0, 1)]
    args = ["--model", str(rm_dir), "--prompt_config", "generic/math", "--device", "cpu", *map(str, files)]
    assert scoring.main(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{files[0]}: scored 5 of 5 rows",
        f"{files[1]}: scored 5 of 5 rows",
    ]
    prompt = load_prompt_config("generic/math")
    for path in files:
        rows = read_jsonl(path)
        expected = scorer.score([Pair(prompt.messages(row), row["generation"]) for row in rows])
        assert [row["reward_model_score"] for row in rows] == pytest.approx(expected, abs=1e-5)
        assert all(set(row) - {"reward_model_score"} == set(result_rows(1, 0)[0]) for row in rows)
    before = [f.read_bytes() for f in files]
    assert scoring.main(args) == 0
    assert capsys.readouterr().out.splitlines() == [f"{files[0]}: already scored", f"{files[1]}: already scored"]
    assert [f.read_bytes() for f in files] == before
    # a new row: only it is scored, the others keep their scores
    rows = read_jsonl(files[0]) + [{"id": "p9", "problem": "What is 9 * 3?", "generation": "27"}]
    write_jsonl(files[0], rows)
    assert scoring.main(args) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{files[0]}: scored 1 of 6 rows"
    assert read_jsonl(files[0])[:5] == rows[:5]
    assert sorted(p.name for p in results.iterdir()) == ["output-rs0.jsonl", "output-rs1.jsonl"]  # no leftovers


def test_the_command_fails_whole_files_and_refuses_a_causal_lm(rm_dir, tmp_path, capsys):
    good = write_jsonl(tmp_path / "output-rs0.jsonl", result_rows(3, 0))
    broken = write_jsonl(tmp_path / "output-rs1.jsonl", [*result_rows(2, 1), {"id": "x", "generation": "1"}])
    before = Path(broken).read_bytes()
    assert scoring.main(["--model", str(rm_dir), "--device", "cpu", str(good), str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: prompt ") and "has no field 'problem'" in err
    assert all("reward_model_score" in row for row in read_jsonl(good))  # the first file is done and whole
    assert Path(broken).read_bytes() == before  # the failed one untouched
    assert scoring.main(["--model", tiny_model(), str(good)]) == 2
    assert "is LlamaForCausalLM, not a reward model" in capsys.readouterr().err


# ---- rm_best@k and rm_majority@k -----------------------------------------------------------------------------------

# (predicted answer, correct, score) of each problem's four samples, seeds in order
SAMPLES = {
    "a": [("1", False, 0.5), ("2", True, 2.0), ("1", False, 1.0), (None, False, 9.0)],
    "b": [("5", True, 0.4), ("6", False, 0.5), ("5", True, 0.3), ("5", True, 0.2)],
    "c": [(None, False, 3.0), (None, False, 1.0), ("7", True, -1.0), ("8", False, -1.0)],
}


def write_scored_results(folder: Path, scored: bool = True) -> Path:
    folder.mkdir(parents=True)
    for seed in range(4):
        rows = [{"id": problem, "predicted_answer": samples[seed][0], "symbolic_correct": samples[seed][1],
                 **({"reward_model_score": samples[seed][2]} if scored else {})}
                for problem, samples in SAMPLES.items()]  # fmt: skip
        write_jsonl(folder / f"output-rs{seed}.jsonl", rows)
    return folder


def test_rm_best_and_rm_majority_hand_computed(tmp_path):
    metrics = summarize_benchmark(write_scored_results(tmp_path / "mathlike"), None).metrics
    assert list(metrics) == ["pass@1[avg-of-4]", "majority@2", "rm_best@2", "rm_majority@2", "pass@2",
                             "majority@4", "rm_best@4", "rm_majority@4", "pass@4"]  # fmt: skip
    value = {mode: (round(m["symbolic_correct"], 2), round(m["no_answer"], 2)) for mode, m in metrics.items()}
    # k=2: a: "2" scores 2.0 > 0.5 (right); b: "6" 0.5 > "5" 0.4 (wrong, in both); c: no answer among the first two
    assert value["rm_best@2"] == value["rm_majority@2"] == (33.33, 33.33)
    # k=4: a: the unanswered 9.0 is ignored, "2" (2.0) beats "1" (0.5 + 1.0); b: the best single score is "6"
    # (wrong), but "5" sums 0.4 + 0.3 + 0.2 = 0.9 > 0.5 (right); c: -1.0 ties, the first answer ("7", right) wins
    assert value["rm_best@4"] == (66.67, 0.0)
    assert value["rm_majority@4"] == (100.0, 0.0)
    assert value["majority@4"] == (66.67, 0.0)  # a: "1" outvotes "2"
    # without scores in every file there are no reward-model modes
    unscored = summarize_benchmark(write_scored_results(tmp_path / "plain", scored=False), None).metrics
    assert not any(mode.startswith("rm_") for mode in unscored)


# ---- ns eval --reward_model ------------------------------------------------------------------------------------------


def eval_graph(**values) -> dict:
    from skills_cli.pipeline.cluster import parse_cluster_config
    from skills_cli.pipeline.commands.evaluate import EvalSpec, compile_eval

    cluster = parse_cluster_config({"executor": "slurm", "job_dir": "/jobs"}, name="c")
    spec = EvalSpec(output_dir="/ev", data_dir="/data", model="/m", benchmarks="arith:2", **values)
    return {job.name: job for job in compile_eval(spec, ["++inference.tokens_to_generate=8"], cluster)}


def test_the_scoring_job_sits_between_grading_and_judge_with_the_generation_prompt():
    jobs = eval_graph(reward_model="/rm", judge_model="/j", server_gpus=2)
    assert jobs["arith-reward-model"].after == ("arith-grade",) and jobs["arith-judge"].after == ("arith-reward-model",)
    assert jobs["summarize"].after == ("arith-judge",)
    scoring_job = jobs["arith-reward-model"]
    script = scoring_job.commands[0].argv[2]
    assert "skills_cli.inference.reward_model --model /rm --prompt_config generic/math --data_dir /data/arith" in script
    assert script.endswith("/ev/eval-results/arith/output-rs0.jsonl /ev/eval-results/arith/output-rs1.jsonl")
    assert scoring_job.resources.gpus_per_node == scoring_job.commands[0].gpus == 1  # 1 when the server has GPUs
    on_cpu = eval_graph(reward_model="/rm", reward_model_gpus=0, server_gpus=2)["arith-reward-model"]
    assert on_cpu.resources.gpus_per_node == 0
    assert "arith-reward-model" not in eval_graph()


@pytest.fixture(scope="module")
def arith_data(tmp_path_factory) -> Path:
    from skills_cli.pipeline import prepare_data

    out = tmp_path_factory.mktemp("data")
    prepare_data(benchmarks=["arith"], data_dir=str(benchmarks_dir()), output_dir=str(out))
    return out


def test_ns_eval_with_a_reward_model_scores_and_summarizes(rm_dir, arith_data, tmp_path):
    from skills_cli.pipeline import eval as evaluate
    from skills_cli.pipeline import wrap_arguments
    from skills_cli.pipeline.experiment import wait
    from skills_cli.pipeline.store import JobState, Store

    output = tmp_path / "scored"
    evaluate(ctx=wrap_arguments("++inference.tokens_to_generate=8"), benchmarks="arith:2", data_dir=str(arith_data),
             output_dir=str(output), model=tiny_model(), server_type="hf", reward_model=str(rm_dir), max_samples=4,
             expname="rm-eval")  # fmt: skip
    store = Store()
    records = wait(store.jobs("rm-eval"), store, timeout=600, poll=1.0)
    assert [r.name for r in records] == ["generate", "arith-grade", "arith-reward-model", "summarize"]
    assert all(r.state is JobState.SUCCEEDED for r in records), run_ns("logs", "rm-eval").stdout[-3000:]
    rows = read_jsonl(output / "eval-results/arith/output-rs1.jsonl")
    assert len(rows) == 4 and all(isinstance(row["reward_model_score"], float) and "symbolic_correct" in row
                                  for row in rows)  # fmt: skip
    metrics = read_json_artifact(output / "metrics.json", EVALUATION)[1]["arith"]
    assert list(metrics) == ["pass@1[avg-of-2]", "majority@2", "rm_best@2", "rm_majority@2", "pass@2"]
    shown = run_ns("summarize_results", str(output), check=True).stdout
    assert "rm_best@2" in shown and "rm_majority@2" in shown


def test_ns_eval_refuses_a_causal_lm_as_reward_model(arith_data, tmp_path):
    result = run_ns("eval", "--benchmarks", "arith", "--data_dir", str(arith_data), "--output_dir",
                    str(tmp_path / "o"), "--model", tiny_model(), "--reward_model", tiny_model(), "--expname", "bad")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (f"error: --reward_model {tiny_model()} is LlamaForCausalLM, not a reward model (a "
                             "sequence-classification model with one score, as ns train rm exports)\n")  # fmt: skip


# ---- GRPO with a reward model ------------------------------------------------------------------------------------------


def test_rewards_mix_the_math_grade_and_the_normalized_score():
    env = EnvConfig(math=MathEnvConfig(weight=0.5), reward_model=RewardModelEnvConfig(model_name="/rm", weight=2.0))
    scores = StepScores(graded=[1.0, 0.0, 1.0], reward_model=[0.5, -1.0, 2.0])
    assert mixed_rewards(scores, env, scores.reward_model) == [1.5, -2.0, 4.5]
    assert mixed_rewards(StepScores([1.0, 0.0]), EnvConfig(), None) == [1.0, 0.0]  # no reward model: unchanged
    # mean 2, population std sqrt(2/3)
    assert standardized([1.0, 2.0, 3.0], 6.0, 14.0, 3.0) == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    assert standardized([2.0, 2.0], 4.0, 8.0, 2.0) == [0.0, 0.0]
    assert sigmoid(0.0) == 0.5 and sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0
    with pytest.raises(UserError, match="env.math.weight=0 leaves no reward"):
        EnvConfig(math=MathEnvConfig(weight=0.0))
    with pytest.raises(UserError, match="are both 0"):
        EnvConfig(math=MathEnvConfig(weight=0.0), reward_model=RewardModelEnvConfig(model_name="/rm", weight=0.0))


def grpo_config(output: Path, policy: str, problems: str, prompt: str, *extra: str) -> GRPOConfig:
    return load_config(GRPOConfig, [
        f"++policy.model_name={policy}", f"++data.train_data={problems}", f"++data.prompt_config={prompt}",
        f"++output_dir={output}", SEQUENCE, FLOAT32, NO_CHECKPOINTS, "++grpo.num_prompts_per_step=32",
        "++grpo.num_generations_per_prompt=8", "++grpo.max_num_epochs=100", "++policy.train_global_batch_size=256",
        "++policy.train_micro_batch_size=64", "++policy.generation.max_new_tokens=32",
        "++policy.generation.temperature=0.7", "++policy.optimizer.kwargs.lr=5e-4",
        "++policy.optimizer.kwargs.weight_decay=0.0", "++loss_fn.reference_policy_kl_penalty=0", *extra,
    ], where="grpo")  # fmt: skip


def metric_rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_grpo_refuses_a_bad_reward_model_before_loading_and_before_submission(tmp_path):
    from skills_cli.training.algorithms.grpo.trainer import run as run_grpo

    problems = write_jsonl(tmp_path / "problems.jsonl", result_rows(32, 0))
    args = (tiny_model(), problems, "generic/math")
    missing = grpo_config(tmp_path / "a", *args, f"++env.reward_model.model_name={tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match=r"^env.reward_model.model_name: no model folder at .*nowhere$"):
        run_grpo(missing)
    causal = grpo_config(tmp_path / "b", *args, f"++env.reward_model.model_name={tiny_model()}")
    with pytest.raises(UserError, match=r"env.reward_model.model_name: .* is LlamaForCausalLM, not a reward model"):
        run_grpo(causal)
    assert not (tmp_path / "b" / "logs" / "metrics.jsonl").exists()
    check_models = ALGORITHMS.get("grpo").check_models  # what `ns train grpo` runs before submitting
    with pytest.raises(UserError, match="is LlamaForCausalLM, not a reward model"):
        check_models(causal)


def test_grpo_reward_is_the_weighted_sum_of_math_and_reward_model(rm_dir, tmp_path):
    from skills_cli.training.algorithms.grpo.trainer import run as run_grpo

    output = tmp_path / "mixed"
    problems = write_jsonl(tmp_path / "problems.jsonl", result_rows(32, 0))
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text('user: "{problem}"\n')  # short: prompt and answer fit the 64-token sequences
    run_grpo(grpo_config(output, tiny_model(), problems, str(prompt), "++grpo.max_num_steps=2",
                         f"++env.reward_model.model_name={rm_dir}", "++env.math.weight=0.5",
                         "++env.reward_model.weight=2.0"))  # fmt: skip
    for row in metric_rows(output):
        assert 0.0 <= row["train/accuracy"] <= 1.0 and row["train/reward_model_score"] != 0.0
        mixed = 0.5 * row["train/accuracy"] + 2.0 * row["train/reward_model_score"]
        assert row["train/reward"] == pytest.approx(mixed, abs=1e-6)


# ---- learning: a trained reward model as the only reward -------------------------------------------------------------

ROUNDS, STEPS_PER_ROUND = 4, 5  # 20 GRPO steps in all
SAMPLES_PER_PROBLEM = 64  # graded samples of the current policy per problem and round: the reward model's data
WINDOW = 5
MARGIN = 0.08  # seeds 42, 1, 2 rose by 0.115, 0.110, 0.118


def graded_samples(policy: Path, warmed: dict, seed: int) -> list[dict]:
    """The policy's samples of GRPO's problems at its rollout temperature, each graded by the math grader (the
    labels a reward model is trained on, as prepare_data reads them: `generation`, `symbolic_correct`)."""
    from skills_cli.inference.engine import TorchEngine
    from skills_cli.training.algorithms.grpo import rollout as rollouts_lib
    from skills_cli.training.algorithms.grpo.data import load_problems, math_reward, stop_token_ids
    from skills_cli.training.components.tokenizer import load_tokenizer

    config = grpo_config(Path("unused"), str(policy), warmed["problems"], str(warmed["prompt"]))
    tokenizer = load_tokenizer(str(policy))
    problems = load_problems(warmed["problems"], tokenizer, config.data, 32)
    engine = TorchEngine.from_pretrained(str(policy), device="cpu", max_batch_size=1024, max_seq_len=64)
    params = rollouts_lib.engine_sampling_params(config.policy.generation, stop_token_ids(tokenizer, str(policy)), seed)
    outputs = engine.generate([list(p.prompt_ids) for p in problems for _ in range(SAMPLES_PER_PROBLEM)], params)
    rows = []
    for index, output in enumerate(outputs):
        problem = warmed["rows"][index // SAMPLES_PER_PROBLEM]
        text = tokenizer.decode(output.token_ids, skip_special_tokens=True)
        correct = math_reward(text, problem["expected_answer"], output.finish_reason == "length", config.env.math)
        rows.append({"problem": problem["problem"], "expected_answer": problem["expected_answer"],
                     "generation": text, "symbolic_correct": correct == 1.0})  # fmt: skip
    return rows


def train_reward_model(samples: list[dict], warmed: dict, folder: Path, seed: int) -> Path:
    """prepare_data's preference mode pairs each problem's correct samples with its incorrect ones (32 per
    problem); `ns train rm`'s trainer fits the warmed model with a scalar head to them; returns its HF export."""
    from skills_cli.training.algorithms.rm.config import RMConfig
    from skills_cli.training.algorithms.rm.trainer import run as run_rm
    from skills_cli.training.prepare_data import PrepareSFTConfig, prepare

    generations = write_jsonl(folder / "generations.jsonl", samples)
    prepare(load_config(PrepareSFTConfig, [
        f"++input_files={generations}", f"++output_path={folder / 'pairs.jsonl'}", f"++prompt_config={warmed['prompt']}",
        "++mode=preference", "++max_pairs_per_problem=32", "++filters.remove_contaminated=false",
        "++filters.drop_multi_boxed=false", f"++random_seed={seed}",
    ], where="prepare_data"))  # fmt: skip
    run_rm(load_config(RMConfig, [
        f"++policy.model_name={warmed['model']}", f"++data.train_data={folder / 'pairs.jsonl'}",
        f"++output_dir={folder / 'rm'}", SEQUENCE, FLOAT32, NO_CHECKPOINTS, "++policy.train_global_batch_size=32",
        "++policy.train_micro_batch_size=32", "++policy.optimizer.kwargs.lr=1e-3",
        "++policy.optimizer.kwargs.weight_decay=0.0", "++rm.max_num_steps=400", "++rm.max_num_epochs=1000",
        "++rm.center_rewards_coefficient=0.01",
    ], where="rm"))  # fmt: skip
    return folder / "rm" / "final_hf"


def rm_only_grpo(policy: Path, reward_model: Path, warmed: dict, output: Path, seed: int) -> list[dict]:
    """STEPS_PER_ROUND GRPO steps whose reward is the reward model's score alone (math weight 0): squashed by a
    sigmoid and not divided by the group's std, so that groups the reward model scores alike (all right or all
    wrong) push little, as under the math reward; a KL penalty of 0.2 keeps the policy where the reward model
    was trained, and a 3-step warm-up spares the tiny model Adam's full first step."""
    from skills_cli.training.algorithms.grpo.trainer import run as run_grpo

    run_grpo(grpo_config(output, str(policy), warmed["problems"], str(warmed["prompt"]),
                         f"++grpo.max_num_steps={STEPS_PER_ROUND}", f"++grpo.seed={seed}",
                         f"++env.reward_model.model_name={reward_model}", "++env.math.weight=0",
                         "++env.reward_model.normalization=sigmoid", "++grpo.normalize_rewards=false",
                         "++loss_fn.reference_policy_kl_penalty=0.2", "++policy.scheduler.warmup_steps=3"))  # fmt: skip
    return metric_rows(output)


@pytest.mark.timeout(900)  # the warm-up, then four rounds of sampling, reward model training and GRPO
def test_a_trained_reward_model_alone_raises_grpo_accuracy(tmp_path):
    """Online reward modelling: each round samples the current policy, labels the samples with the math grader,
    retrains the reward model on every round's pairs so far, then runs GRPO on its score alone. The grader only
    labels the reward model's data; the policy's reward never sees it. One reward model trained once on the
    warmed model's samples (held-out within-problem AUC 0.96) raised accuracy less (over 30 steps, seeds 42, 1,
    2: +0.11, +0.10, +0.07): the policy drifts to answers it has not seen."""
    warmed = warmed_model()
    policy, samples, rows = warmed["model"], [], []
    for round_ in range(ROUNDS):
        samples += graded_samples(policy, warmed, seed=100 + round_)
        reward_model = train_reward_model(samples, warmed, tmp_path / f"rm{round_}", seed=round_)
        rows += rm_only_grpo(policy, reward_model, warmed, tmp_path / f"grpo{round_}", seed=42 + round_)
        policy = tmp_path / f"grpo{round_}" / "final_hf"
    accuracy = [row["train/accuracy"] for row in rows]
    assert len(accuracy) == ROUNDS * STEPS_PER_ROUND
    shown = " ".join(f"{a:.2f}" for a in accuracy)
    first, last = statistics.fmean(accuracy[:WINDOW]), statistics.fmean(accuracy[-WINDOW:])
    assert 0.2 < first < 0.8, f"the warm-up should leave room to learn; accuracy: {shown}"
    assert last > first + MARGIN, f"accuracy {first:.3f} (first {WINDOW} steps) -> {last:.3f}; accuracy: {shown}"
    middle = statistics.fmean(accuracy[WINDOW:-WINDOW])
    assert first < middle < last + 0.05, f"not a trend: {first:.3f} -> {middle:.3f} -> {last:.3f}; accuracy: {shown}"
    # the reward is the reward model's sigmoid-squashed score, not the grade
    assert all(0.0 < row["train/reward"] < 1.0 and row["train/reward"] != row["train/accuracy"] for row in rows)
