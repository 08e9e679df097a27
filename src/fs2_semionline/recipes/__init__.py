"""fairseq2 recipes of the package; each module runs with ``python -m`` too."""

from __future__ import annotations

import importlib
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from fairseq2.task import Task

from fs2_semionline.config.presets import get_preset, merged_config_file
from fs2_semionline.core.errors import ConfigError, check_output_dir

RECIPES: dict[str, str] = {
    "evaluate": "fs2_semionline.recipes.evaluate:EvaluateRecipe",
    "preference_finetune": "fs2_semionline.recipes.preference_finetune:PreferenceFinetuneRecipe",
}


def _pop_option(args: list[str], name: str) -> str | None:
    """Removes ``name VALUE`` or ``name=VALUE`` from ``args`` and returns VALUE."""
    for i, arg in enumerate(args):
        if arg == name:
            if i + 1 >= len(args):
                raise ConfigError(f"{name} needs a value")
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del args[i]
            return arg.split("=", 1)[1]
    return None


def run_recipe(recipe_name: str, args: list[str]) -> None:
    if recipe_name not in RECIPES:
        raise ConfigError(f"unknown recipe '{recipe_name}'; known: {', '.join(RECIPES)}")
    args = list(args)
    preset_name = _pop_option(args, "--preset")
    if preset_name is not None:
        user_file = _pop_option(args, "--config-file")
        preset = get_preset(preset_name, recipe_name)
        config_file = merged_config_file(preset, Path(user_file) if user_file else None)
        args = ["--config-file", str(config_file), *args]
    sys.argv = [f"fs2-semionline lm {recipe_name}", *args]
    _check_output_dirs()
    module_name, class_name = RECIPES[recipe_name].split(":")
    recipe = getattr(importlib.import_module(module_name), class_name)()
    from fs2_semionline.recipes import run_cli

    run_cli(recipe)


def _check_output_dirs() -> None:
    """OUTPUT_DIR and --checkpoint-dir as fairseq2's own parser reads them from
    ``sys.argv``: folders this process can write, before anything loads."""
    from fairseq2.recipe.cli import _parse_args

    parsed = _parse_args()
    if parsed.output_dir is not None and not parsed.dump_config:
        check_output_dir(parsed.output_dir, "OUTPUT_DIR")
    if parsed.checkpoint_dir is not None:
        check_output_dir(parsed.checkpoint_dir, "--checkpoint-dir")


def run_cli(recipe: Any) -> None:
    """fairseq2's own recipe CLI (config file, --config overrides, errors, exit codes)."""
    from fairseq2.recipe.cli import main

    main(recipe)


class ClosingTask(Task):
    """A fairseq2 Task that also closes what the recipe started (actors, pools, Ray).

    fairseq2's task runner calls ``close()`` after ``run()`` however it ends (finished,
    stopped, raised), so generator actors and worker pools never outlive their run. The
    stack closes in reverse order of starting, each even if another fails; a second
    ``close()`` does nothing.
    """

    def __init__(self, task: Any, stack: ExitStack) -> None:
        self._task = task
        self._stack = stack

    def run(self) -> None:
        self._task.run()

    def request_stop(self) -> None:
        self._task.request_stop()

    @property
    def step_nr(self) -> int:
        return int(self._task.step_nr)

    def close(self) -> None:
        try:
            self._task.close()
        finally:
            self._stack.close()
