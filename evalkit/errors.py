"""One error hierarchy for evalkit.

Every error carries a :class:`Category` (the same vocabulary is stored in the workspace for failed
calls) and a message that says what went wrong *and what to do about it*. Messages never contain
API keys: anything that might echo a request (server bodies, URLs) goes through
:func:`evalkit.credentials.redact` before it lands here.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    AUTH = "auth"
    RATE_LIMIT = "rate_limit"
    BAD_REQUEST = "bad_request"
    MODERATION = "moderation"
    TASK_FAILED = "task_failed"
    TIMEOUT = "timeout"
    NETWORK = "network"
    SERVER = "server"
    BAD_OUTPUT = "bad_output"
    BUDGET = "budget"
    #: the provider account has run dry (WaveSpeed: 403 whose message mentions the balance; HTTP 402
    #: elsewhere). Nothing was created; a run stops submitting and leaves the untried calls planned.
    BALANCE = "insufficient_balance"
    INVALID_INPUT = "invalid_input"
    #: the submit may or may not have been accepted (e.g. a read timeout after the request was sent);
    #: evalkit never re-sends such a submit on its own.
    UNKNOWN_OUTCOME = "unknown_outcome"
    CANCELLED = "cancelled"


class EvalkitError(Exception):
    """Base class. ``str(err)`` is the message followed by the hint, if any."""

    category: Category = Category.INVALID_INPUT

    def __init__(self, message: str, *, hint: str | None = None, category: Category | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if category is not None:
            self.category = Category(category)

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(category={self.category.value!r}, message={self.message!r})"


class InvalidInputError(EvalkitError):
    """Bad input from the user: an image, a prompt, an option, a path or id."""

    category = Category.INVALID_INPUT


class ImageError(InvalidInputError):
    """An input image that cannot be used (corrupt, truncated, too large, unsupported)."""


class ImageTooLargeError(ImageError):
    """An image over a byte or pixel cap (refused before its pixels are decoded)."""


class UnknownModelError(InvalidInputError):
    def __init__(self, model_id: str, known: list[str] | None = None):
        hint = "run `evalkit models` to list the catalogue"
        if known:
            close = _close_matches(model_id, known)
            if close:
                hint = f"did you mean {', '.join(close)}? ({hint})"
        super().__init__(f"unknown model id {model_id!r}", hint=hint)
        self.model_id = model_id


class UnsupportedOperationError(InvalidInputError):
    pass


class CatalogError(InvalidInputError):
    """A catalogue file that does not parse or does not describe a model completely."""


class SuiteError(InvalidInputError):
    """A suite with problems; ``problems`` lists every one found, not just the first."""

    def __init__(self, suite: str, problems: list[str]):
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"suite {suite!r} has {len(problems)} problem(s):\n{listing}",
            hint="fix these in the suite's suite.toml or its files, then run again",
        )
        self.problems = list(problems)


class MissingKeyError(EvalkitError):
    category = Category.AUTH

    def __init__(self, env_var: str, provider: str):
        super().__init__(
            f"no API key for {provider}: the environment variable {env_var} is not set",
            hint=f"export {env_var}=... (keys are read from the environment only), "
            "or use the local server: `evalkit sim` / `evalkit demo`",
        )
        self.env_var = env_var


class ProviderError(EvalkitError):
    """A call to a hosted model failed. ``retryable`` says whether trying again may help."""

    def __init__(
        self,
        message: str,
        *,
        category: Category,
        hint: str | None = None,
        status_code: int | None = None,
        code: int | str | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        prediction_id: str | None = None,
    ):
        super().__init__(message, hint=hint, category=category)
        self.status_code = status_code
        self.code = code
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.prediction_id = prediction_id


class BudgetExceededError(EvalkitError):
    category = Category.BUDGET


class WorkspaceError(EvalkitError):
    """The workspace cannot be read or written (locked, read-only, disk full, newer schema)."""

    category = Category.INVALID_INPUT


def _close_matches(word: str, choices: list[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
