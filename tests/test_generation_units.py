"""Units of the generation stack: JSONL reading/writing, ++overrides, prompt configs, chunking, reasoning
splitting and resume bookkeeping."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import DurableAppender, iter_jsonl, read_jsonl, write_jsonl_atomic
from skills_cli.common.overrides import load_config, overrides_to_dict
from skills_cli.inference.config import GenerateConfig
from skills_cli.inference.generate import chunk_slice, split_reasoning
from skills_cli.inference.merge_chunks import chunk_file
from skills_cli.inference.resume import matching_records
from skills_cli.prompts import load_prompt_config
from skills_cli.prompts.chat_templates import CHATML, render


def test_malformed_jsonl_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(UserError, match=r"in\.jsonl:3: malformed JSON line"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match=r":2: expected a JSON object, got list"):
        read_jsonl(path)
    with pytest.raises(UserError, match="input file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_atomic_write_and_durable_append_survive_partial_lines(tmp_path):
    out = tmp_path / "fresh" / "out.jsonl"
    write_jsonl_atomic(out, [{"i": i} for i in range(3)])
    assert [r["i"] for r in read_jsonl(out)] == [0, 1, 2]
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]  # no temporary left behind
    side = tmp_path / "side.jsonl"
    side.write_text('{"_key": "a-0", "g": "a"}\n{"_key": "b-0", "g": "b"}\n{"_key": "c-0", "g"')  # killed mid-line
    assert sorted(matching_records(side, ["a-0", "b-0", "c-0"])) == ["a-0", "b-0"]
    with DurableAppender(side) as appender:  # repairs the cut line, then appends cleanly
        appender.append({"_key": "c-0", "g": "c"})
    assert [r["_key"] for r in iter_jsonl(side)] == ["a-0", "b-0", "c-0"]


def test_overrides_parse_yaml_values_and_reject_typos():
    tree = overrides_to_dict(["++a.b=1", "+c=true", "d=[x, '</think>']", "++e=null", "++f=text: with colon"])
    assert tree == {"a": {"b": 1}, "c": True, "d": ["x", "</think>"], "e": None, "f": "text: with colon"}
    with pytest.raises(UserError, match="cannot parse override"):
        overrides_to_dict(["++no_equals"])
    base = ["++input_file=i", "++output_file=o", "++prompt_config=generic/math"]
    config = load_config(GenerateConfig, [*base, "++inference.temperature=0.6", "++inference.stop=['</think>']"])
    assert config.inference.temperature == 0.6 and config.inference.stop == ["</think>"]
    with pytest.raises(UserError, match=r"unknown key 'tokens_to_generat' \(did you mean 'tokens_to_generate'\?\)"):
        load_config(GenerateConfig, [*base, "++inference.tokens_to_generat=5"])
    with pytest.raises(UserError, match="expected float"):
        load_config(GenerateConfig, [*base, "++inference.temperature=hot"])


def test_the_generation_program_takes_any_server_kind_and_knows_the_external_api():
    # the kinds are the launcher's registry (it checks --server_type); in the job only `openai` changes the client
    base = ["++input_file=i", "++output_file=o", "++prompt_config=generic/math"]
    plugin_kind = load_config(GenerateConfig, [*base, "++server.server_type=toyhf"]).server
    assert plugin_kind.server_type == "toyhf" and not plugin_kind.is_external_api
    assert load_config(GenerateConfig, [*base, "++server.server_type=openai"]).server.is_external_api
    with pytest.raises(UserError, match="server.server_type must not be empty"):
        load_config(GenerateConfig, [*base, "++server.server_type=''"])


def test_prompt_config_fills_rows_and_names_missing_fields(tmp_path):
    prompt = load_prompt_config("generic/math")
    (message,) = prompt.messages({"problem": "What is 2+2?", "other": 1})
    assert message["role"] == "user" and message["content"].endswith("What is 2+2?")
    assert "\\boxed{}" in message["content"]  # doubled braces become literal ones
    with pytest.raises(UserError, match=r"row 7 has no field 'problem' \(row fields: question\)"):
        prompt.messages({"question": "x"}, row_number=7)
    custom = tmp_path / "shots.yaml"
    custom.write_text(
        "system: 'Be brief.'\nuser: '{examples}Q: {q}'\nfew_shot_examples:\n  template: \"Q: {q}\\nA: {a}\\n\\n\"\n"
        "  examples: [{q: '1+1', a: '2'}]\n"
    )
    system, user = load_prompt_config(str(custom)).messages({"q": "2+2"})
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == "Q: 1+1\nA: 2\n\nQ: 2+2"
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: 'Put it in \\\\boxed{}'\n")
    with pytest.raises(UserError, match="literal braces"):
        load_prompt_config(str(bad))
    with pytest.raises(UserError, match="not found"):
        load_prompt_config("generic/nope")


def test_chat_template_renders_chatml():
    text = render(CHATML, [{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_chunks_cover_every_row_once():
    for rows in (1, 7, 100):
        for chunks in (1, 3, 7):
            if chunks > rows:
                continue
            covered = [i for k in range(chunks) for i in range(*chunk_slice(rows, chunks, k))]
            assert covered == list(range(rows))
    assert chunk_file("/o/output-rs3.jsonl", 2) == "/o/output-rs3_chunk_2.jsonl"


def test_reasoning_split():
    assert split_reasoning("<think>hmm</think> 42", "<think>", "</think>") == {
        "reasoning": "hmm", "generation": "42", "finished_thinking": True}  # fmt: skip
    assert split_reasoning("<think>still going", "<think>", "</think>")["generation"] == ""


def test_generate_program_errors_are_one_line(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"question": "x"}) + "\n")
    result = subprocess.run([sys.executable, "-m", "skills_cli.inference.generate", f"++input_file={data}",
                             f"++output_file={tmp_path}/o.jsonl", "++prompt_config=generic/math"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "row 1 has no field 'problem'" in result.stderr and "Traceback" not in result.stderr
