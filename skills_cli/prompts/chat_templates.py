"""Client-side chat templates for text-completion endpoints (`++prompt_template=qwen-instruct`).

With the chat endpoint the server applies the model's own template. With a text endpoint the client must
render the conversation itself: either with the model's tokenizer (`++server.tokenizer=PATH`) or with one of
these named templates, or a Jinja file given by path.
"""

from __future__ import annotations

from pathlib import Path

from skills_cli.common.errors import UserError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
NAMED = {"chatml": CHATML, "qwen-instruct": CHATML, "llama3-instruct": LLAMA3}


def template_text(name: str) -> str:
    if name in NAMED:
        return NAMED[name]
    path = Path(name)
    if path.is_file():
        return path.read_text()
    raise UserError(f"prompt_template {name!r}: not a known template ({', '.join(sorted(NAMED))}) or a file")


def render(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)
