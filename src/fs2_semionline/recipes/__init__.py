"""fairseq2 recipes of the package; each module runs with ``python -m`` too."""

from __future__ import annotations

from typing import Any


def run_cli(recipe: Any) -> None:
    """fairseq2's own recipe CLI (config file, --config overrides, errors, exit codes)."""
    from fairseq2.recipe.cli import main

    main(recipe)
