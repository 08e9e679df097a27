"""Errors a user can fix, reported by the recipe CLI as one clear line (exit code 2)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn


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


def exit_with(error: Exception | str) -> NoReturn:
    """The end of a CLI command given bad input: ``error: ...`` on stderr, exit code 2."""
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)


def check_output_dir(path: Path, what: str) -> None:
    """``path`` is (or becomes) a folder this process can write, checked before anything
    loads; ``what`` names it for the user (``OUTPUT_DIR``, ``--out``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be written: {err.strerror or err}") from None
