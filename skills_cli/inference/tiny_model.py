"""Tiny, randomly initialised chat models built entirely offline, for tests, demos and the CPU quickstart.

`build_tiny_model` trains a byte-level BPE tokenizer on a small arithmetic corpus, builds a Llama- or
Qwen2-shaped causal LM around it and saves both with `save_pretrained`, so every consumer (our server,
transformers, vLLM on a GPU machine) loads the directory like any model from the hub.

The Qwen2 tokenizer trap (transformers 5.x): for a `qwen2` config, `AutoTokenizer` ignores the saved
pre-tokenizer and rebuilds it as `Qwen2Tokenizer` does (NFC normalizer, Qwen's split regex, ByteLevel
without regex), so a tokenizer trained with another pre-tokenizer changes its ids on reload wherever the
two split differently (e.g. multi-digit merges when numbers were kept whole). Two defences:
  * for arch "qwen2" we train with exactly the normalizer and pre-tokenizer that transformers' own
    `Qwen2Tokenizer` imposes (read from the installed library, not copied), so AutoTokenizer's rebuild is a
    no-op; Qwen's regex already isolates single digits, which is what arithmetic needs;
  * `model_loading.load_tokenizer`, the loader every consumer uses, reads `tokenizer.json` verbatim
    (`PreTrainedTokenizerFast`), whatever the model type.
`build_tiny_model` checks that both loaders reproduce the trained ids and refuses to return otherwise.

Heavy imports (torch, transformers, tokenizers) happen inside functions: importing this module is cheap.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skills_cli.inference.model_loading import load_tokenizer

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
# Order fixes their ids (0..3), which keeps configs readable and stable across corpora.
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, PAD]

ARCHITECTURES = ("llama", "qwen2")

# ChatML. `messages[*].content` is a string here; the server flattens OpenAI content-part lists first.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Text whose ids must survive a save/reload round trip (digits, spaces, newlines, specials, non-ASCII).
ROUND_TRIP_PROBE = (
    "<|im_start|>user\nWhat is 12+7?<|im_end|>\n<|im_start|>assistant\n12 + 7 = 19. \\boxed{19}<|im_end|>\n"
    "Compute 345*6, then   subtract 1000.\n\nCafé, naïve: x² ≈ 3.14 <|endoftext|><|pad|>"
)


def arithmetic_corpus(num_examples: int = 2000, seed: int = 0) -> list[str]:
    """Math-flavoured text: questions, worked answers with \\boxed{}, and ChatML-formatted dialogues."""
    rng = random.Random(seed)
    operations = [
        ("+", "plus", lambda a, b: a + b),
        ("-", "minus", lambda a, b: a - b),
        ("*", "times", lambda a, b: a * b),
    ]
    lines = []
    for index in range(num_examples):
        a, b = rng.randint(0, 999), rng.randint(0, 99)
        symbol, word, apply = operations[index % len(operations)]
        answer = apply(a, b)
        question = rng.choice([f"What is {a}{symbol}{b}?", f"Compute {a} {symbol} {b}.", f"What is {a} {word} {b}?"])
        solution = f"{a} {symbol} {b} = {answer}. The answer is \\boxed{{{answer}}}."
        if index % 2:
            lines.append(f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n{solution}{IM_END}\n")
        else:
            lines.append(f"Question: {question}\nAnswer: {solution}{ENDOFTEXT}")
    return lines


def _qwen2_pre_tokenization() -> tuple[Any, Any] | None:
    """The (normalizer, pre-tokenizer) that transformers 5.x's Qwen2Tokenizer forces on load, or None if it forces none.

    Read from an empty instance of the installed class, so we follow whatever the installed version does.
    In transformers 4.x Qwen2Tokenizer is a slow tokenizer that AutoTokenizer does not use for tokenizer.json.
    """
    from transformers.models.qwen2 import tokenization_qwen2

    qwen2_tokenizer_class = tokenization_qwen2.Qwen2Tokenizer
    try:
        from transformers import TokenizersBackend
    except ImportError:  # transformers 4.x: tokenizer.json is loaded verbatim
        return None
    if not issubclass(qwen2_tokenizer_class, TokenizersBackend):
        return None
    backend = qwen2_tokenizer_class().backend_tokenizer
    return backend.normalizer, backend.pre_tokenizer


def _digit_splitting_byte_level():
    """Each digit its own pre-token (arithmetic learns far faster), then GPT-2 style byte-level splitting."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512, arch: str = "llama"):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `corpus`, with the chat special tokens as ids 0..3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    forced = _qwen2_pre_tokenization() if arch == "qwen2" else None
    if forced is not None:
        tokenizer.normalizer, tokenizer.pre_tokenizer = forced
    else:
        tokenizer.pre_tokenizer = _digit_splitting_byte_level()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        # all 256 byte symbols, so any text (not just the corpus alphabet) stays encodable
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def wrap_tokenizer(tokenizer, max_length: int):
    """The transformers tokenizer around a trained `tokenizers.Tokenizer`: ChatML template, eos/pad, no bos."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD,
        # Qwen-style: no BOS is prepended; <|endoftext|> separates documents.
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[ENDOFTEXT, IM_START],
        model_max_length=max_length,
        chat_template=CHATML_TEMPLATE,
        padding_side="left",  # decoder-only batches are left-padded
    )
    return wrapped


def model_config(
    arch: str,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    max_position_embeddings: int,
    token_ids: dict[str, int],
):
    """A LlamaConfig or Qwen2Config for a small causal LM with tied embeddings and the chat special-token ids."""
    from transformers import LlamaConfig, Qwen2Config

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, not {arch!r}")
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError("hidden_size must be a multiple of num_heads, and num_heads a multiple of num_kv_heads")
    config_class = LlamaConfig if arch == "llama" else Qwen2Config
    return config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=token_ids[ENDOFTEXT],
        eos_token_id=token_ids[IM_END],
        pad_token_id=token_ids[PAD],
    )


def generation_config_for(config):
    """Generation defaults that agree with the model config: stop at <|im_end|>, pad with <|pad|>, greedy."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )


def check_round_trip(path: Path, trained_tokenizer) -> None:
    """Raise if `load_tokenizer` or `AutoTokenizer` give ids other than the trained tokenizer's."""
    from transformers import AutoTokenizer

    expected = trained_tokenizer.encode(ROUND_TRIP_PROBE).ids
    loaders = {"load_tokenizer": load_tokenizer, "AutoTokenizer": lambda p: AutoTokenizer.from_pretrained(str(p))}
    for name, loader in loaders.items():
        got = loader(path).encode(ROUND_TRIP_PROBE, add_special_tokens=True)
        if got != expected:
            raise RuntimeError(f"{name} does not reproduce the trained tokenizer's ids in {path}: {got} != {expected}")


def build_tiny_model(
    output_dir: str | Path,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 2,
    vocab_size: int = 512,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    max_position_embeddings: int = 2048,
) -> Path:
    """Train a tokenizer, build a random `arch` causal LM around it, save both to `output_dir`; return the path.

    `vocab_size` is the BPE training target; the model's embedding matches the vocabulary actually learned
    (a small corpus may support fewer merges), so every id the model can emit decodes to text.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, not {arch!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else arithmetic_corpus(seed=seed)
    trained = train_tokenizer(texts, vocab_size=vocab_size, arch=arch)
    tokenizer = wrap_tokenizer(trained, max_length=max_position_embeddings)
    token_ids = {token: trained.token_to_id(token) for token in SPECIAL_TOKENS}
    config = model_config(
        arch,
        trained.get_vocab_size(),
        hidden_size,
        num_layers,
        num_heads,
        num_kv_heads,
        max_position_embeddings,
        token_ids,
    )
    torch.manual_seed(seed)  # same seed, same weights
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = generation_config_for(config)
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    check_round_trip(output_dir, trained)
    return output_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m skills_cli.inference.tiny_model",
        description="Build a tiny random chat model (tokenizer + weights) offline and print its path.",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--arch", choices=ARCHITECTURES, default="llama")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=2)
    parser.add_argument("--num_kv_heads", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=512, help="BPE training target")
    parser.add_argument("--max_position_embeddings", type=int, default=2048)
    parser.add_argument("--corpus_file", help="text file, one training document per line (default: arithmetic)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from transformers.utils import logging as transformers_logging

    args = parse_args(argv)
    transformers_logging.disable_progress_bar()  # stdout/stderr carry just the path (or an error)
    corpus = None
    if args.corpus_file:
        corpus = [line for line in Path(args.corpus_file).read_text().splitlines() if line.strip()]
    path = build_tiny_model(
        args.output_dir,
        arch=args.arch,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        vocab_size=args.vocab_size,
        corpus=corpus,
        seed=args.seed,
        max_position_embeddings=args.max_position_embeddings,
    )
    print(path.resolve())


if __name__ == "__main__":
    main()
