"""The GRPO rollout engines on CPU: TorchEngine against HF `generate` and HF forward logprobs (tiny Llama and
Qwen2 models with scrambled weights, so greedy paths are varied), seeds, stops, refit, refill order, sleep;
the vLLM adapter's pure parameter mapping and its error when vLLM is missing."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from skills_cli.common.errors import UserError  # noqa: E402
from skills_cli.inference.engine import (  # noqa: E402
    Generation,
    SamplingParams,
    TorchEngine,
    sampling,  # noqa: E402
)
from skills_cli.inference.engine.hf_backend import HFBackend  # noqa: E402
from skills_cli.inference.engine.params import row_key  # noqa: E402
from skills_cli.inference.engine.penalties import apply_penalties  # noqa: E402
from skills_cli.inference.engine.scheduler import Request, Scheduler, requests_for  # noqa: E402
from skills_cli.inference.engine.stopping import eos_token_ids  # noqa: E402
from skills_cli.inference.engine.vllm_engine import VllmEngine, vllm_request_kwargs  # noqa: E402
from skills_cli.inference.tiny_model import build_tiny_model  # noqa: E402

ARCHS = ["llama", "qwen2"]
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [20, 20, 20], [30, 31, 32, 33]]
EOS = 2  # <|im_end|> in the tiny models


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CPU is shared: intra-op threads spin against each other and make tiny matmuls 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scrambled(path, seed: int):
    """The saved tiny model with large random weights (the stock init mostly repeats the last token)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim == 2:
                parameter.copy_(noise * 0.3)
            elif name.endswith("bias"):
                parameter.copy_(noise * 0.1)
            else:
                parameter.copy_(1 + 0.1 * noise)
    return model


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout")
    return {arch: build_tiny_model(root / arch, arch=arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def models(paths):
    return {arch: scrambled(paths[arch], seed=1) for arch in ARCHS}


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=3)  # fmt: skip
    return out[0, len(prompt) :].tolist()


def hf_logprobs(model, prompt: list[int], generated: list[int], temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of each generated token under one HF forward over prompt + generated."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + generated])).logits[0, len(prompt) - 1 : -1].float()
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    return logprobs[torch.arange(len(generated)), torch.tensor(generated)]


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_hf_generate_with_ragged_prompts_and_refill(models, arch):
    model = models[arch]
    engine = TorchEngine(model, max_batch_size=3, max_seq_len=128)  # 5 prompts through 3 slots
    results = engine.generate(PROMPTS, SamplingParams(max_new_tokens=24, temperature=0))
    for prompt, result in zip(PROMPTS, results, strict=True):
        expected = hf_greedy(model, prompt, 24)
        assert result.token_ids == expected
        assert result.finish_reason == ("stop" if expected[-1] == EOS else "length")
        assert len(result.logprobs) == len(result.token_ids)
    top_k_one = engine.generate(PROMPTS, SamplingParams(max_new_tokens=24, temperature=0.7, top_k=1))
    assert [r.token_ids for r in top_k_one] == [r.token_ids for r in results]


def general_backend_generate(model, prompts, params, slots: int) -> list:
    """The shared core over the general backend (the model's own forward and a DynamicCache), as TorchEngine
    drives it over the compact one: submit everything, step until done."""
    backend = HFBackend(model, slots, 128, pad_id=3)
    scheduler = Scheduler(backend, model.config.vocab_size, torch.device("cpu"), eos_token_ids(model))
    results = [None] * len(prompts)
    for request in requests_for(
        prompts, params, [lambda r, i=i: results.__setitem__(i, r) for i in range(len(prompts))]
    ):
        scheduler.submit(request)
    with torch.inference_mode():
        while scheduler.has_work:
            scheduler.step()
    assert backend.order == [] and backend.cache is None  # every row left the cache
    return results


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.filterwarnings("error::FutureWarning")  # e.g. a forward keyword transformers renamed and will drop
def test_the_general_backend_decodes_like_hf_and_samples_like_the_compact_one(models, arch):
    model = models[arch]
    greedy = general_backend_generate(model, PROMPTS, SamplingParams(max_new_tokens=24, temperature=0), slots=3)
    for prompt, result in zip(PROMPTS, greedy, strict=True):
        assert result.token_ids == hf_greedy(model, prompt, 24)
    params = SamplingParams(max_new_tokens=16, temperature=1.3, top_p=0.9, seed=11, ignore_eos=True)
    general = general_backend_generate(model, PROMPTS, params, slots=2)
    compact = TorchEngine(model, max_batch_size=4, max_seq_len=128).generate(PROMPTS, params)
    assert [r.token_ids for r in general] == [r.token_ids for r in compact]
    for ours, theirs in zip(general, compact, strict=True):
        torch.testing.assert_close(torch.tensor(ours.logprobs), torch.tensor(theirs.logprobs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("params", [
    SamplingParams(max_new_tokens=20, temperature=0.7, seed=5, ignore_eos=True),
    SamplingParams(max_new_tokens=20, temperature=1.3, top_p=0.9, top_k=50, seed=6, ignore_eos=True),
    SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True),
], ids=["temperature", "filtered", "greedy"])  # fmt: skip
def test_logprobs_are_log_softmax_of_logits_over_temperature(models, arch, params):
    model = models[arch]
    engine = TorchEngine(model, max_batch_size=4, max_seq_len=128)
    temperature = params.temperature or 1.0
    for prompt, result in zip(PROMPTS, engine.generate(PROMPTS, params), strict=True):
        assert len(result.token_ids) == 20 and result.finish_reason == "length"
        expected = hf_logprobs(model, prompt, result.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(result.logprobs), expected, atol=1e-4, rtol=0)


def test_seeds_reproduce_across_capacities_and_differ_between_seeds(models):
    model = models["qwen2"]
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=11, ignore_eos=True)
    small = TorchEngine(model, max_batch_size=2, max_seq_len=64)
    large = TorchEngine(model, max_batch_size=8, max_seq_len=64)
    first = [r.token_ids for r in small.generate(PROMPTS, params)]
    assert [r.token_ids for r in small.generate(PROMPTS, params)] == first
    assert [r.token_ids for r in large.generate(PROMPTS, params)] == first
    other = [r.token_ids for r in small.generate(PROMPTS, SamplingParams(max_new_tokens=16, seed=12, ignore_eos=True))]
    assert all(a != b for a, b in zip(first, other, strict=True))
    # the same prompt repeated (a GRPO group) gets a different sample per copy
    group = [r.token_ids for r in large.generate([PROMPTS[0]] * 4, params)]
    assert len({tuple(g) for g in group}) == 4


def run_requests(scheduler, prompts, params_list) -> list:
    """Each prompt with its own parameters through one scheduler (a mixed batch), stepped until done."""
    results = [None] * len(prompts)
    for index, (prompt, params) in enumerate(zip(prompts, params_list, strict=True)):
        done = lambda result, i=index: results.__setitem__(i, result)  # noqa: E731
        scheduler.submit(Request(list(prompt), params, row_key(0, index), done))
    with torch.inference_mode():
        while scheduler.has_work:
            scheduler.step()
    return results


def penalised_greedy(model, prompt: list[int], params: SamplingParams) -> tuple[list[int], list[float]]:
    """The reference: HF forward, penalties over the prompt and the tokens so far, argmax, log_softmax."""
    ids, logprobs = [], []
    with torch.no_grad():
        for _ in range(params.max_new_tokens):
            logits = model(torch.tensor([prompt + ids])).logits[0, -1:].float()
            logits = apply_penalties(logits, [prompt], [ids], [params])
            ids.append(int(logits.argmax()))
            logprobs.append(logits.log_softmax(-1)[0, ids[-1]].item())
    return ids, logprobs


def test_penalties_apply_before_sampling_only_to_the_rows_that_ask(models):
    model = models["qwen2"]
    plain = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    penalised = replace(plain, repetition_penalty=1.8, frequency_penalty=0.7, presence_penalty=0.4)
    params_list = [penalised, plain, penalised, plain, penalised]
    compact = TorchEngine(model, max_batch_size=3, max_seq_len=64).scheduler
    general = Scheduler(HFBackend(model, 3, 64, pad_id=3), model.config.vocab_size, torch.device("cpu"),
                        eos_token_ids(model))  # fmt: skip
    for scheduler in (compact, general):
        results = run_requests(scheduler, PROMPTS, params_list)
        for prompt, params, result in zip(PROMPTS, params_list, results, strict=True):
            if params is plain:
                assert result.token_ids == hf_greedy(model, prompt, 12)
                continue
            ids, logprobs = penalised_greedy(model, prompt, params)
            assert result.token_ids == ids
            torch.testing.assert_close(torch.tensor(result.logprobs), torch.tensor(logprobs), atol=1e-4, rtol=0)
    assert any(penalised_greedy(model, p, penalised)[0] != hf_greedy(model, p, 12) for p in PROMPTS)


def test_stop_tokens_and_max_new_tokens(models):
    model = models["llama"]
    engine = TorchEngine(model, max_batch_size=4, max_seq_len=64)
    free = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=30, temperature=0, ignore_eos=True))[0]
    stop = free.token_ids[5]
    first = free.token_ids.index(stop)
    stopped = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=30, temperature=0, ignore_eos=True,
                                                           stop_token_ids=(stop,)))[0]  # fmt: skip
    assert stopped.token_ids == free.token_ids[: first + 1] and stopped.finish_reason == "stop"
    assert stopped.logprobs == pytest.approx(free.logprobs[: first + 1], abs=1e-6)
    short = engine.generate(PROMPTS, SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True))
    assert [len(r.token_ids) for r in short] == [3] * len(PROMPTS)
    assert {r.finish_reason for r in short} == {"length"}
    # max_seq_len caps prompt + generated tokens
    capped = TorchEngine(model, max_batch_size=2, max_seq_len=16).generate(
        [list(range(5, 17))], SamplingParams(max_new_tokens=30, temperature=0, ignore_eos=True))[0]  # fmt: skip
    assert len(capped.token_ids) == 4 and capped.finish_reason == "length"


def test_model_eos_stops_unless_ignored(models):
    model = models["llama"]
    engine = TorchEngine(model, max_batch_size=8, max_seq_len=256)
    prompts = [[i, i + 1, i + 2] for i in range(5, 205, 5)]
    results = engine.generate(prompts, SamplingParams(max_new_tokens=40, temperature=1.0, seed=3))
    stopped = [r for r in results if r.finish_reason == "stop"]
    assert stopped, "no sequence sampled EOS; pick another seed"
    for result in results:
        assert EOS not in result.token_ids[:-1]
        assert (result.token_ids[-1] == EOS) == (result.finish_reason == "stop")
    ignoring = engine.generate(prompts, SamplingParams(max_new_tokens=40, temperature=1.0, seed=3, ignore_eos=True))
    assert all(len(r.token_ids) == 40 and r.finish_reason == "length" for r in ignoring)


def test_load_weights_switches_to_the_new_weights(models, paths):
    engine = TorchEngine(scrambled(paths["qwen2"], seed=1), max_batch_size=4, max_seq_len=64)
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    before = [r.token_ids for r in engine.generate(PROMPTS, greedy)]
    new = scrambled(paths["qwen2"], seed=2)
    assert engine.load_weights(new.state_dict()) == len(new.state_dict())
    after = [r.token_ids for r in engine.generate(PROMPTS, greedy)]
    assert after != before
    for prompt, tokens in zip(PROMPTS, after, strict=True):
        assert tokens == hf_greedy(new, prompt, 12)
    # (name, tensor) pairs in bf16 are accepted too (refit in buckets, any dtype)
    engine.load_weights((name, tensor.to(torch.bfloat16)) for name, tensor in models["qwen2"].state_dict().items())
    with pytest.raises(UserError, match="unknown tensor name"):
        engine.load_weights({"model.layers.99.mlp.up_proj.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="shape"):
        engine.load_weights({"model.norm.weight": torch.zeros(3)})


def test_more_prompts_than_slots_come_back_in_input_order(models):
    model = models["llama"]
    prompts = [[7 + i] * (1 + i % 6) for i in range(13)]
    greedy = SamplingParams(max_new_tokens=10, temperature=0)
    alone = [TorchEngine(model, max_batch_size=1, max_seq_len=32).generate([p], greedy)[0] for p in prompts]
    together = TorchEngine(model, max_batch_size=3, max_seq_len=32).generate(prompts, greedy)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    # sampled: request i draws from stream (seed, i), so 3 slots and 16 slots give the same rows
    nucleus = SamplingParams(max_new_tokens=10, top_p=0.8, seed=4)
    few = TorchEngine(model, max_batch_size=3, max_seq_len=32).generate(prompts, nucleus)
    many = TorchEngine(model, max_batch_size=16, max_seq_len=32).generate(prompts, nucleus)
    assert [r.token_ids for r in few] == [r.token_ids for r in many]
    for prompt, result in zip(prompts, few, strict=True):
        expected = hf_logprobs(model, prompt, result.token_ids, 1.0)
        torch.testing.assert_close(torch.tensor(result.logprobs), expected, atol=1e-4, rtol=0)


def test_top_p_tiny_is_greedy_and_top_k_stays_in_the_top_k(models):
    model = models["qwen2"]
    engine = TorchEngine(model, max_batch_size=5, max_seq_len=64)
    greedy = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True))
    nucleus = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, top_p=1e-6, seed=1, ignore_eos=True))
    assert [r.token_ids for r in nucleus] == [r.token_ids for r in greedy]
    top3 = engine.generate(
        PROMPTS, SamplingParams(max_new_tokens=12, temperature=2.0, top_k=3, seed=1, ignore_eos=True)
    )
    for prompt, result in zip(PROMPTS, top3, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + result.token_ids])).logits[0, len(prompt) - 1 : -1]
        allowed = logits.topk(3, dim=-1).indices
        assert all(token in allowed[i].tolist() for i, token in enumerate(result.token_ids))


def test_sampling_follows_the_softmax_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0]]).repeat(40000, 1)
    keys = torch.tensor([row_key(9, i) for i in range(40000)], dtype=torch.long)
    draws = sampling.uniforms(keys, torch.zeros_like(keys))
    temperature, top_k, top_p = torch.tensor([1.5]), torch.tensor([5]), torch.tensor([1.0])
    tokens, logprobs = sampling.sample(logits, draws, sampling.SAMPLE, temperature, top_k, top_p)
    expected = torch.softmax(logits[0] / 1.5, dim=-1)
    observed = torch.bincount(tokens, minlength=5).float() / len(tokens)
    torch.testing.assert_close(observed, expected, atol=0.01, rtol=0)
    torch.testing.assert_close(logprobs, expected.log()[tokens])
    # top_k 2 renormalises over the two largest logits
    filtered, _ = sampling.sample(logits, draws, sampling.FILTERED, temperature, torch.tensor([2]), top_p)
    kept = torch.softmax(torch.tensor([2.0, 3.0]) / 1.5, dim=-1)
    observed = torch.bincount(filtered, minlength=5).float() / len(filtered)
    torch.testing.assert_close(observed[[0, 4]], kept, atol=0.01, rtol=0)
    assert observed[[1, 2, 3]].sum() == 0


def test_device_uniforms_equal_the_host_hash():
    keys = [row_key(seed, index) for seed in (0, 1, 2**40 + 3) for index in (0, 1, 7, 2**33)]
    counters = [0, 1, 2, 1000, 2**31 + 5]
    pairs = [(k, c) for k in keys for c in counters]
    device = sampling.uniforms(torch.tensor([k for k, _ in pairs]), torch.tensor([c for _, c in pairs]))
    host = torch.tensor([sampling.uniform_host(k, c) for k, c in pairs])
    assert torch.equal(device, host)
    numpy_keys, numpy_counters = (
        torch.tensor([k for k, _ in pairs]).numpy(),
        torch.tensor([c for _, c in pairs]).numpy(),
    )
    assert torch.equal(torch.from_numpy(sampling.uniforms_array(numpy_keys, numpy_counters)), host)
    assert 0 < device.min() and device.max() < 1 and len(set(device.tolist())) == len(pairs)


def test_sleep_and_wake(models):
    engine = TorchEngine(models["llama"], max_batch_size=2, max_seq_len=32)
    params = SamplingParams(max_new_tokens=6, temperature=0)
    before = engine.generate(PROMPTS[:2], params)
    engine.sleep()
    assert engine.cache is None
    with pytest.raises(UserError, match="asleep"):
        engine.generate(PROMPTS[:2], params)
    engine.wake()
    assert [r.token_ids for r in engine.generate(PROMPTS[:2], params)] == [r.token_ids for r in before]


def test_bad_requests_are_user_errors(models):
    engine = TorchEngine(models["llama"], max_batch_size=2, max_seq_len=16)
    params = SamplingParams(max_new_tokens=4)
    vocab = engine.decoder.vocab_size
    cases = {"empty": [[]], "is text": ["hello"], "outside": [[vocab]], "leaves no room": [list(range(16))]}
    for message, prompts in cases.items():
        with pytest.raises(UserError, match=message):
            engine.generate(prompts, params)
    assert engine.generate([], params) == []
    for bad in ({"max_new_tokens": 0}, {"max_new_tokens": 4, "temperature": -1}, {"max_new_tokens": 4, "top_p": 0},
                {"max_new_tokens": 4, "top_k": -2}, {"max_new_tokens": 4, "stop_token_ids": [2]}):  # fmt: skip
        with pytest.raises(UserError):
            SamplingParams(**bad)
    with pytest.raises(UserError, match="max_position_embeddings"):
        TorchEngine(models["llama"], max_seq_len=10**6)
    with pytest.raises(UserError, match="config.json"):
        TorchEngine.from_pretrained("/nonexistent/model")


def test_from_pretrained_loads_a_checkpoint_directory(paths):
    engine = TorchEngine.from_pretrained(paths["qwen2"], device="cpu", max_batch_size=2, max_seq_len=32)
    assert engine.dtype == torch.float32 and engine.eos_token_ids == frozenset({EOS})
    result = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=4, temperature=0))[0]
    assert isinstance(result, Generation) and 1 <= len(result.token_ids) <= 4


def test_vllm_request_kwargs_map_our_sampling_params():
    params = SamplingParams(max_new_tokens=64, temperature=0.6, top_p=0.95, top_k=0, stop_token_ids=(7, 9),
                            ignore_eos=True, seed=3)  # fmt: skip
    first, second = vllm_request_kwargs(params, 0, 3), vllm_request_kwargs(params, 1, 3)
    assert first == {"n": 1, "max_tokens": 64, "temperature": 0.6, "top_p": 0.95, "top_k": -1, "min_p": 0.0, "stop_token_ids": [7, 9],
                     "ignore_eos": True, "seed": row_key(3, 0), "logprobs": 0, "detokenize": False}  # fmt: skip
    assert second["seed"] == row_key(3, 1) != first["seed"]
    assert vllm_request_kwargs(SamplingParams(max_new_tokens=1, top_k=20), 0, 0)["top_k"] == 20


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_engine_without_vllm_is_a_user_error(paths):
    with pytest.raises(UserError, match="pip install 'skills-cli\\[vllm\\]'"):
        VllmEngine.from_pretrained(str(paths["llama"]))
