"""Bad input through fairseq2's recipe CLI: our errors and fairseq2's config parse errors
as one line on the console with exit code 2 (the stack trace in the run's log file)."""

from __future__ import annotations

import logging
import re

from fs2_semionline.core.errors import ConfigError, DataFileError, UserInputError


def describe_user_error(ex: BaseException) -> str | None:
    """The one line a user gets for ``ex``, or None when ``ex`` is a bug (then the stack
    trace is the useful part)."""
    from fairseq2.recipe.error import RecipeConfigParseError

    if isinstance(ex, UserInputError):
        return str(ex)
    if isinstance(ex, RecipeConfigParseError):
        return "configuration: " + _describe_parse_error(ex) + " (--no-exit-on-error shows the stack trace)"
    return None


_GENERIC = (
    "Recipe configuration cannot be structured.",
    "Config overrides cannot be applied to the recipe configuration.",
    "Value cannot be structured to ",
    "`obj` cannot be parsed as ",
)


def _describe_parse_error(ex: BaseException) -> str:
    """fairseq2's chain of structuring errors as ``key.path: reason``."""
    path: list[str] = []
    reasons: list[str] = []
    err: BaseException | None = ex
    while err is not None:
        msg = re.sub(r"`?<class '(?:[\w]+\.)*(\w+)'>`?", r"\1", str(err))
        field = re.fullmatch(r"`(\w+)` field cannot be structured\.", msg) or re.fullmatch(
            r"Value of the (\S+) key cannot be structured\.", msg
        )
        element = re.fullmatch(r"Element .* at index (\d+) cannot be structured as .*", msg)
        extra = re.search(r"contains extra key\(s\) (.*)\.$", msg)
        if field:
            path.append(field[1])
            reasons = []
        elif element:
            path.append(f"[{element[1]}]")
            reasons = []
        elif extra:
            reasons.append(f"unknown key(s) {extra[1]}{_moved(path, extra[1])} (--dump-config lists every key)")
        elif not msg.startswith(_GENERIC):
            reasons.append(msg)
        err = err.__cause__
    key = ".".join(path).replace(".[", "[")
    reason = " ".join(reasons) or str(ex)
    return f"{key}: {reason}" if key else reason


def _moved(path: list[str], keys: str) -> str:
    """Where the unknown ``keys`` under ``path`` went, for keys of an earlier release."""
    from fs2_semionline.config.training import MOVED_KEYS

    prefix = "".join(f"{p}." for p in path)
    moved = [
        f"{prefix}{k} is now {MOVED_KEYS[prefix + k]}" for k in re.split(r"[,\s]+", keys) if prefix + k in MOVED_KEYS
    ]
    return f" ({'; '.join(moved)})" if moved else ""


class _OneLineOnConsole(logging.Filter):
    """On the console a user error is its one line, without the stack trace. The run's
    log file keeps the trace for bug reports: its handler sits on the ``fairseq2`` logger
    and sees the record before the console handler on the root logger does."""

    def filter(self, record: logging.LogRecord) -> bool:
        ex = record.exc_info[1] if record.exc_info else None
        line = describe_user_error(ex) if ex is not None else None
        if line is not None:
            record.msg, record.args = line, ()
            record.exc_info, record.exc_text = None, None
        return True


def register_cli_errors(container: object) -> None:
    """Bad input through fairseq2's recipe CLI: our errors and fairseq2's config parse
    errors as one line on the console with exit code 2 (the stack trace in the log file),
    and config values structured strictly (``container.register_strict_values``)."""
    from fairseq2.logging import log
    from fairseq2.recipe.cli import register_cli_error

    from fs2_semionline.glue.container import register_strict_values

    def handle(ex: Exception) -> int:
        log.exception("{}", ex)
        return 2

    for kls in (ConfigError, DataFileError):
        register_cli_error(container, kls, handle)  # type: ignore[arg-type]
    register_strict_values(container)  # type: ignore[arg-type]
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _OneLineOnConsole) for f in handler.filters):
            handler.addFilter(_OneLineOnConsole())
