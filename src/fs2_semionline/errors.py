"""Errors a user can fix, reported by the recipe CLI as one clear line (exit code 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class UserInputError(ValueError):
    """Base: bad config values or bad data files. Never a crash deep in a stack."""


class ConfigError(UserInputError):
    """A config value is missing or contradicts another; the message names the key."""


def check_data_files(key: str, paths: Sequence[Path]) -> None:
    """Checked before any model loads: a typo in a path must not cost a model download."""
    if not paths:
        raise ConfigError(f"{key} is empty: set --config '{key}=[file.jsonl]'")
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"{key}: {path} is not a file")


def register_cli_errors(container: object) -> None:
    """Makes fairseq2's recipe CLI log our errors as one line and exit with 2."""
    from fairseq2.logging import log
    from fairseq2.recipe.cli import register_cli_error

    from fs2_semionline.data.jsonl import DataFileError

    def handle(ex: Exception) -> int:
        log.error("{}", ex)
        return 2

    for kls in (ConfigError, DataFileError):
        register_cli_error(container, kls, handle)  # type: ignore[arg-type]
