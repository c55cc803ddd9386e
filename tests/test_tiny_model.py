"""The tiny-model builder: tokenizer round trips (llama and qwen2), ChatML, special tokens, a loadable model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from skills_cli.inference import tiny_model  # noqa: E402
from skills_cli.inference.model_loading import load_tokenizer  # noqa: E402
from skills_cli.inference.tiny_model import build_tiny_model  # noqa: E402

TEXTS = [
    "What is 12+7?",
    "Compute 345 * 6, then subtract 1000.\n\nThe answer is \\boxed{1070}.",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces, tabs\tand unicode: café ≈ π²  ",
    "<|endoftext|>9876543210<|pad|>",
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One llama and one qwen2 tiny model, built once for the module."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(root / arch, arch=arch) for arch in ("llama", "qwen2")}


def trained_ids(path, text: str) -> list[int]:
    """Ids from the saved tokenizer.json itself, read by the `tokenizers` library with no transformers logic."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path / "tokenizer.json")).encode(text).ids


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_reloaded_tokenizers_give_the_trained_ids(models, arch):
    from transformers import AutoTokenizer

    path = models[arch]
    ours, auto = load_tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    for text in TEXTS:
        expected = trained_ids(path, text)
        assert ours.encode(text) == expected, text
        assert auto.encode(text) == expected, (text, type(auto).__name__)
        assert ours.decode(expected) == text


def test_retraining_on_the_same_corpus_gives_the_same_vocabulary(models):
    retrained = tiny_model.train_tokenizer(tiny_model.arithmetic_corpus(seed=0), vocab_size=512, arch="llama")
    saved = json.loads((models["llama"] / "tokenizer.json").read_text())["model"]["vocab"]
    assert retrained.get_vocab() == saved


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_digits_are_single_tokens(models, arch):
    tokenizer = load_tokenizer(models[arch])
    ids = tokenizer.encode("1234567890")
    assert len(ids) == 10
    assert [tokenizer.decode([i]) for i in ids] == list("1234567890")


def test_qwen2_needs_the_defence_against_autotokenizer(tmp_path):
    """transformers 5.x rebuilds a qwen2 checkpoint's pre-tokenizer in AutoTokenizer. With a tokenizer whose
    BPE learnt multi-digit merges (plain ByteLevel), the ids change; check_round_trip catches it, and
    load_tokenizer still reads the ids as trained."""
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("AutoTokenizer keeps tokenizer.json as saved before transformers 5")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # numbers stay whole: "123" merges
    trained.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=tiny_model.SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    trained.train_from_iterator(tiny_model.arithmetic_corpus(), trainer=trainer)
    ids = {token: trained.token_to_id(token) for token in tiny_model.SPECIAL_TOKENS}
    tiny_model.model_config("qwen2", trained.get_vocab_size(), 32, 1, 2, 1, 128, ids).save_pretrained(str(tmp_path))
    tiny_model.wrap_tokenizer(trained, max_length=128).save_pretrained(str(tmp_path))

    text = "What is 345 plus 12?"
    assert AutoTokenizer.from_pretrained(str(tmp_path)).encode(text) != trained.encode(text).ids
    with pytest.raises(RuntimeError, match="AutoTokenizer does not reproduce"):
        tiny_model.check_round_trip(tmp_path, trained)
    assert load_tokenizer(tmp_path).encode(text) == trained.encode(text).ids


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_chat_template_renders_chatml(models, arch):
    tokenizer = load_tokenizer(models[arch])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    without_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert without_prompt == rendered.removesuffix("<|im_start|>assistant\n")
    ids = tokenizer.encode(rendered, add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # specials stay single tokens


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_special_tokens_agree_across_tokenizer_config_and_generation_config(models, arch):
    from transformers import AutoConfig, GenerationConfig

    path = models[arch]
    tokenizer, config = load_tokenizer(path), AutoConfig.from_pretrained(str(path))
    generation = GenerationConfig.from_pretrained(str(path))
    assert config.model_type == arch
    assert [tokenizer.convert_tokens_to_ids(t) for t in tiny_model.SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>" and tokenizer.bos_token is None
    assert tokenizer.padding_side == "left"
    assert config.eos_token_id == generation.eos_token_id == tokenizer.eos_token_id == 2
    assert config.pad_token_id == generation.pad_token_id == tokenizer.pad_token_id == 3
    assert config.bos_token_id == generation.bos_token_id == 0
    assert config.tie_word_embeddings and config.vocab_size == len(tokenizer)
    assert (path / "model.safetensors").is_file()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_model_reloads_and_generates(models, arch):
    import torch
    from transformers import AutoModelForCausalLM

    path = models[arch]
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tokenizer = load_tokenizer(path)
    assert type(model).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]
    assert 100_000 < model.num_parameters() < 300_000
    prompt = torch.tensor([tokenizer.encode("What is 3+4?")])
    output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False)
    assert output.shape[0] == 1 and prompt.shape[1] < output.shape[1] <= prompt.shape[1] + 6
    assert torch.equal(output[0, : prompt.shape[1]], prompt[0])


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    from safetensors.torch import load_file

    kwargs = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1}
    first = load_file(build_tiny_model(tmp_path / "a", seed=3, **kwargs) / "model.safetensors")
    again = load_file(build_tiny_model(tmp_path / "b", seed=3, **kwargs) / "model.safetensors")
    other = load_file(build_tiny_model(tmp_path / "c", seed=4, **kwargs) / "model.safetensors")
    assert first.keys() == again.keys() and all((first[k] == again[k]).all() for k in first)
    assert any(not (first[k] == other[k]).all() for k in first)


def test_custom_corpus_and_sizes(tmp_path):
    corpus = ["alpha beta gamma 123"] * 50 + ["delta epsilon 45"] * 50
    path = build_tiny_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, corpus=corpus)
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (32, 1, 2)
    vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    assert "alpha" in vocab or "Ġbeta" in vocab  # merges learnt from the given corpus, not the default one


def test_invalid_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="arch must be one of"):
        build_tiny_model(tmp_path / "x", arch="gpt2")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        build_tiny_model(tmp_path / "y", hidden_size=30, num_heads=4)


def test_cli_builds_and_prints_the_path(tmp_path, capsys):
    target = tmp_path / "cli-model"
    tiny_model.main(
        [
            "--output_dir",
            str(target),
            "--arch",
            "qwen2",
            "--hidden_size",
            "32",
            "--num_layers",
            "1",
            "--num_heads",
            "2",
            "--num_kv_heads",
            "1",
            "--seed",
            "7",
        ]
    )
    assert capsys.readouterr().out.strip() == str(target.resolve())
    config = json.loads((target / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["hidden_size"] == 32


def test_importing_the_module_imports_no_torch():
    import subprocess
    import sys

    probe = "import sys, skills_cli.inference.tiny_model; print(sorted({'torch', 'transformers', 'tokenizers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
