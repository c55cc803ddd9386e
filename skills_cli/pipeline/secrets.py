"""Secrets in printed text: what counts as one and how it is hidden.

Every value of a cluster's `env_vars` / `required_env_vars` (a `NAME=value` literal or a value copied from
the submitting shell) is treated as a secret. The executors keep these values out of the files they write
(spec.json, sbatch scripts: only the names are stored there) and everything we print goes through a
`Masker`, which replaces them by `<hidden>`:

- in `NAME=value` assignments we render (dry runs), a cluster variable, or any variable whose name looks
  like a credential (KEY, TOKEN, SECRET, PASS, CREDENTIAL, PRIVATE, AUTH, COOKIE), is `NAME=<hidden>`
  whatever its value;
- in free text (command lines, logs, error messages, status reasons) a value is hidden wherever it occurs
  when it is at least 6 characters long, or at least 4 for a credential-like name. Shorter values and a few
  common words (`true`, `none`, ...) are left alone: hiding every `1` or `true` in a log would make it
  unreadable and protects nothing that could not be guessed;
- the password of a URL with userinfo (`scheme://user:password@host`) is hidden in all printed text,
  whether or not it came from the cluster config.

Values are hidden as written and as shell-quoted (dry runs quote them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from skills_cli.pipeline.shell import quote

HIDDEN = "<hidden>"
MIN_VALUE_LENGTH = 6
MIN_CREDENTIAL_LENGTH = 4
_CREDENTIAL_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS|CREDENTIAL|PRIVATE|AUTH|COOKIE", re.IGNORECASE)
_COMMON_WORDS = {"true", "false", "yes", "no", "none", "null", "auto", "default"}
# scheme://user:password@ -> the password group; user and password stop at separators and quotes
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)([^\s@/'\"]+)(@)")

_remembered: set[str] = set()


def looks_like_credential(name: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name))


def maskable_values(env: Mapping[str, str]) -> set[str]:
    """The values of `env` that free text must never show (see the module docstring for the lengths)."""
    values = set()
    for name, value in env.items():
        if value.lower() in _COMMON_WORDS:
            continue
        shortest = MIN_CREDENTIAL_LENGTH if looks_like_credential(name) else MIN_VALUE_LENGTH
        if len(value) >= shortest:
            values.add(value)
    return values


def hide_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(rf"\1{HIDDEN}\3", text)


class Masker:
    """Replaces known secret values (and URL passwords) in text meant for a terminal."""

    def __init__(self, values: Iterable[str] = ()):
        forms = set()
        for value in values:
            forms.update((value, quote(value)))
        # longest first: a secret that contains another is hidden whole
        self._forms = sorted(forms, key=len, reverse=True)

    @classmethod
    def for_env(cls, env: Mapping[str, str]) -> Masker:
        return cls(maskable_values(env))

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, HIDDEN)
        return hide_url_passwords(text)


def hide_assignments(env: Mapping[str, str], secret_names: Iterable[str] = ()) -> dict[str, str]:
    """For rendering `NAME=value` only: cluster variables and credential-like names show `<hidden>`."""
    secret = set(secret_names)
    return {
        name: HIDDEN if name in secret or looks_like_credential(name) else hide_url_passwords(value)
        for name, value in env.items()
    }


def remember(env: Mapping[str, str]) -> None:
    """Values this process learned from a cluster config, so `mask_known` hides them in any later message."""
    _remembered.update(maskable_values(env))


def mask_known(text: str) -> str:
    """Hide every remembered secret (and URL passwords): for error messages printed by the CLI."""
    return Masker(_remembered)(text)
