"""API keys: read from the environment only, never shown.

A key is held in a :class:`Secret` whose ``repr``/``str`` are masked, so it cannot leak through a
log line, an exception or a dataclass repr by accident. :func:`redact` scrubs every known key value
out of text that came from elsewhere (a server's error body, a URL) before evalkit stores or shows it.
"""

from __future__ import annotations

import os
import re

#: environment variables that hold secrets; redact() scrubs their values wherever they appear.
KEY_ENV_VARS = (
    "WAVESPEED_API_KEY",
    "STABILITY_API_KEY",
    "HF_TOKEN",
    "EVALKIT_JUDGE_API_KEY",
)

_MASK = "***"


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value", "env_var")

    def __init__(self, value: str, env_var: str = ""):
        self._value = value
        self.env_var = env_var

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.env_var or 'key'}={_MASK})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # never pickled into a file or sent to a subprocess by accident
        raise TypeError("Secret values cannot be pickled")


def key_from_env(env_var: str, *, required: bool = True, provider: str = "") -> Secret | None:
    """The key in ``env_var``; raises :class:`MissingKeyError` when required and unset."""
    value = os.environ.get(env_var, "").strip()
    if value:
        return Secret(value, env_var)
    if required:
        from evalkit.errors import MissingKeyError

        raise MissingKeyError(env_var, provider or env_var.split("_")[0].lower())
    return None


def _known_secret_values() -> list[str]:
    values = []
    for name in KEY_ENV_VARS:
        v = os.environ.get(name, "").strip()
        if len(v) >= 4:
            values.append(v)
    return values


_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{6,}")


def redact(text: str | None, *extra: Secret | str | None) -> str:
    """``text`` with every known key value (and any bearer token) replaced by ``***``."""
    if not text:
        return text or ""
    out = str(text)
    for v in [*(_known_secret_values()), *(e.reveal() if isinstance(e, Secret) else e for e in extra if e)]:
        if v and len(v) >= 4:
            out = out.replace(v, _MASK)
    return _BEARER.sub(r"\1" + _MASK, out)
