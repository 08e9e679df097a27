"""Errors a user can fix, reported by the recipe CLI as one clear line (exit code 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class UserInputError(ValueError):
    """Base: bad config values or bad data files. Never a crash deep in a stack."""


class ConfigError(UserInputError):
    """A config value is missing or contradicts another; the message names the key."""


class DataFileError(UserInputError):
    """A data file is malformed; the message names file, line and field."""

    def __init__(self, path: Path, line_nr: int, message: str, field_name: str | None = None) -> None:
        where = f"{path}:{line_nr}"
        if field_name is not None:
            where += f": field '{field_name}'"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line_nr = line_nr
        self.field_name = field_name


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

    def handle(ex: Exception) -> int:
        log.error("{}", ex)
        return 2

    for kls in (ConfigError, DataFileError):
        register_cli_error(container, kls, handle)  # type: ignore[arg-type]
