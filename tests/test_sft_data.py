"""SFT data units: chat-template tokenization and loss masks, over-long samples, row errors, packing, batching,
data order across epochs, and the learning-rate schedule."""

from __future__ import annotations

import pytest
from test_sft_support import tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.inference.model_loading import load_tokenizer
from skills_cli.training.components.batching import (
    block_causal_mask,
    first_fit_decreasing,
    make_micro_batches,
    packed_micro_batch,
    shard_for_rank,
)
from skills_cli.training.components.data import (
    IGNORE_INDEX,
    DataPosition,
    SFTSample,
    load_sft_dataset,
    make_sample,
    next_global_batch,
    tokenize_conversation,
)
from skills_cli.training.components.optim import lr_multiplier
from skills_cli.training.config import DataConfig, SchedulerConfig

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "Sure?"},
    {"role": "assistant", "content": "Yes, 5."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(tiny_model())


def trained_text(tokenizer, ids, mask) -> str:
    return tokenizer.decode([token for token, bit in zip(ids, mask, strict=True) if bit])


def test_only_assistant_replies_are_trained(tokenizer):
    ids, mask = tokenize_conversation(tokenizer, CHAT)
    # the assistant headers are prompt (given at inference); the replies and their end-of-turn are trained
    assert trained_text(tokenizer, ids, mask) == "5<|im_end|>\nYes, 5.<|im_end|>\n"
    # per-message pieces concatenate to exactly the template's rendering of the whole conversation
    full = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert ids == tokenizer(full, add_special_tokens=False)["input_ids"]


def test_message_boundaries_follow_the_template(tokenizer):
    ids, mask = tokenize_conversation(tokenizer, CHAT)
    text_before_first_trained = tokenizer.decode(ids[: mask.index(1)])
    assert text_before_first_trained.endswith("<|im_start|>assistant\n")
    assert text_before_first_trained.count("<|im_start|>") == 3  # system, user, assistant header


def test_labels_are_shifted_next_tokens_of_trained_positions():
    sample = SFTSample(input_ids=[10, 11, 12, 13, 14], loss_mask=[0, 0, 1, 1, 0])
    assert sample.labels() == [IGNORE_INDEX, 12, 13, IGNORE_INDEX, IGNORE_INDEX]
    assert sample.num_valid_tokens == 2


def test_overlong_samples_are_kept_fully_masked_and_counted(tokenizer, tmp_path):
    long_answer = " ".join(["12345"] * 200)
    rows = [{"input": "What is 1+1?", "output": "2"}, {"input": "Count.", "output": long_answer}]
    dataset = load_sft_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, DataConfig(), max_length=64)
    short, long = dataset.samples
    assert dataset.num_overlong == 1 and long.overlong and not short.overlong
    assert len(long) == 64  # cut for shape only ...
    assert long.num_valid_tokens == 0 and set(long.labels()) == {IGNORE_INDEX}  # ... it trains nothing
    assert short.num_valid_tokens > 0


def test_make_sample_keeps_fitting_samples_untouched():
    assert make_sample([1, 2, 3], [0, 1, 1], max_length=3) == SFTSample([1, 2, 3], [0, 1, 1])


def test_missing_fields_name_the_file_and_line(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"input": "a", "output": "b"}, {"input": "only a prompt"}])
    with pytest.raises(UserError, match=r"bad\.jsonl:2: missing field 'output'"):
        load_sft_dataset(path, tokenizer, DataConfig(), max_length=64)


def test_malformed_messages_name_the_row(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user"}]}])
    with pytest.raises(UserError, match=r"bad\.jsonl:1: messages\[0\] needs a string 'role' and 'content'"):
        load_sft_dataset(path, tokenizer, DataConfig(), max_length=64)


def test_custom_keys(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "What is 1+1?", "answer": "2"}])
    dataset = load_sft_dataset(path, tokenizer, DataConfig(input_key="question", output_key="answer"), 64)
    sample = dataset.samples[0]
    assert trained_text(tokenizer, sample.input_ids, sample.loss_mask) == "2<|im_end|>\n"


def test_missing_data_file(tokenizer, tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_sft_dataset(str(tmp_path / "nope.jsonl"), tokenizer, DataConfig(), 64)


def test_first_fit_decreasing():
    bins = first_fit_decreasing([5, 3, 8, 2, 4, 1], capacity=10)
    assert bins == [[2, 3], [0, 4, 5], [1]]  # 8+2, 5+4+1, 3
    assert all(sum([5, 3, 8, 2, 4, 1][i] for i in b) <= 10 for b in bins)
    assert sorted(i for b in bins for i in b) == list(range(6))


def test_packed_rows_restart_positions_and_mask_across_sequences():
    samples = [SFTSample([1, 2, 3], [0, 1, 1]), SFTSample([4, 5], [0, 1])]
    (batch,) = make_micro_batches(samples, micro_batch_size=1, pad_id=0, pack_capacity=6)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 0]]  # padded to the bin size: one shape for all rows
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 0]]
    # the last token of sequence 1 must not learn to predict the first of sequence 2
    assert batch.labels.tolist() == [[2, 3, IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch.num_tokens == 5 and batch.num_valid_tokens == 3
    import torch

    allowed = block_causal_mask(batch.segment_ids, torch.float32)[0, 0] == 0
    assert allowed.tolist() == [
        [True, False, False, False, False, False],
        [True, True, False, False, False, False],
        [True, True, True, False, False, False],
        [False, False, False, True, False, False],
        [False, False, False, True, True, False],
        [False, False, False, False, False, True],  # padding sees only itself: no empty softmax row
    ]


def test_packed_rows_of_a_micro_batch_each_hold_their_own_samples():
    """Rows of one, two and three samples, filled unequally: every row restarts its segments at 0 and its
    padding continues its positions as a segment of its own (the number of the fullest row's samples)."""
    a, b, c = SFTSample([1, 2], [0, 1]), SFTSample([3, 4, 5], [0, 1, 1]), SFTSample([6], [1])
    d, e, f = SFTSample([7, 8], [0, 1]), SFTSample([9], [0]), SFTSample([10, 11], [1, 1])
    batch = packed_micro_batch([[a], [b, c], [d, e, f]], pad_id=0, length=6)
    assert batch.input_ids.tolist() == [[1, 2, 0, 0, 0, 0], [3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 0, 1, 2, 3], [0, 1, 2, 0, 0, 1], [0, 1, 0, 0, 1, 0]]
    assert batch.segment_ids.tolist() == [[0, 0, 3, 3, 3, 3], [0, 0, 0, 1, 3, 3], [0, 0, 1, 2, 2, 3]]
    X = IGNORE_INDEX
    assert batch.labels.tolist() == [[2, X, X, X, X, X], [4, 5, X, X, X, X], [8, X, X, 11, X, X]]
    assert batch.row_tokens.tolist() == [2, 4, 5] and batch.num_tokens == 11


def test_padded_micro_batches():
    samples = [SFTSample([1, 2, 3], [0, 1, 1]), SFTSample([4, 5], [0, 1]), SFTSample([6, 7], [0, 1])]
    first, second = make_micro_batches(samples, micro_batch_size=2, pad_id=9)
    assert first.input_ids.tolist() == [[1, 2, 3], [4, 5, 9]]
    assert first.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert first.labels.tolist() == [[2, 3, IGNORE_INDEX], [5, IGNORE_INDEX, IGNORE_INDEX]]
    assert second.input_ids.tolist() == [[6, 7]] and first.num_valid_tokens + second.num_valid_tokens == 4


def test_shard_for_rank_splits_contiguously():
    assert [shard_for_rank(list(range(8)), r, 4) for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_epochs_drop_the_tail_and_cross_the_boundary_when_drawn():
    position = DataPosition()
    batches = [next_global_batch(position, num_samples=10, batch_size=4, seed=1) for _ in range(3)]
    assert sorted(batches[0] + batches[1]) != list(range(10))  # two batches of 4 from a shuffled 10
    assert len(set(batches[0] + batches[1])) == 8  # no repeats within an epoch
    assert position == DataPosition(epoch=1, index=4)  # the third batch is the first of epoch 1
    # a position saved at the end of an epoch resumes into the next epoch, not past it
    resumed = DataPosition(epoch=0, index=8)
    assert next_global_batch(resumed, 10, 4, seed=1) == batches[2]


def test_lr_schedules():
    warm = SchedulerConfig(name="constant", warmup_steps=4)
    assert [lr_multiplier(s, warm, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = SchedulerConfig(name="cosine", warmup_steps=0, min_lr_ratio=0.1)
    assert lr_multiplier(0, cosine, 11) == pytest.approx(1.0)
    assert lr_multiplier(5, cosine, 11) == pytest.approx(0.55)
    assert lr_multiplier(10, cosine, 11) == pytest.approx(0.1)
    linear = SchedulerConfig(name="linear", warmup_steps=2)
    assert lr_multiplier(2, linear, 12) == pytest.approx(1.0) and lr_multiplier(11, linear, 12) == pytest.approx(0.0)
