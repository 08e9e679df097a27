"""``fs2-semionline``: list presets, run a recipe (fairseq2's own CLI does the parsing).

    fs2-semionline presets
    fs2-semionline plot RUN_DIR [RUN_DIR ...]
    fs2-semionline data numinamath|wildchat|math500|amc23 IN... --out DIR
    fs2-semionline export RUN_DIR|CHECKPOINT OUT_DIR [--step N | --best] [--dtype D]
    fs2-semionline lm evaluate OUT_DIR [--preset NAME] [--config-file F] [--config k=v ...]

Everything after the recipe name except ``--preset`` goes to fairseq2's recipe CLI
(``--config-file``, ``--config``, ``--dump-config``, ``--no-rich``, ...).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from fs2_semionline.errors import ConfigError, UserInputError, check_output_dir, exit_with
from fs2_semionline.presets import get_preset, list_presets, merged_config_file

RECIPES: dict[str, str] = {
    "evaluate": "fs2_semionline.recipes.evaluate:EvaluateRecipe",
    "preference_finetune": "fs2_semionline.recipes.preference_finetune:PreferenceFinetuneRecipe",
}

USAGE = """usage: fs2-semionline presets
       fs2-semionline plot RUN_DIR [RUN_DIR ...] [--out DIR] [--metric NAME] [--smooth N]
       fs2-semionline data {numinamath,wildchat,math500,amc23} IN... --out DIR [...]
       fs2-semionline export RUN_DIR|CHECKPOINT OUT_DIR [--step N | --best] [--dtype D]
       fs2-semionline lm RECIPE OUT_DIR [--preset NAME] [--config-file F] [--config k=v ...]

recipes: """ + ", ".join(RECIPES)


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
        raise ConfigError(f"unknown recipe '{recipe_name}'.\n{USAGE}")
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


def main(argv: list[str] | None = None) -> None:
    try:
        _main(sys.argv[1:] if argv is None else argv)
    except UserInputError as err:
        exit_with(err)


def _main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] == "presets":
        presets = list_presets()
        width = max(len(p.name) for p in presets)
        for p in presets:
            print(f"{p.name:<{width}}  lm {p.recipe:<20} {p.about}")
        return
    if argv[0] == "data":
        from fs2_semionline.data.prepare import main as data_main

        data_main(argv[1:])
        return
    if argv[0] == "export":
        from fs2_semionline.export import main as export_main

        export_main(argv[1:])
        return
    if argv[0] == "plot":
        from fs2_semionline.plot import main as plot_main

        plot_main(argv[1:])
        return
    if argv[0] == "lm" and len(argv) >= 2:
        run_recipe(argv[1], argv[2:])
        return
    raise ConfigError(f"unknown command {' '.join(argv[:2])!r}\n{USAGE}")


if __name__ == "__main__":
    main()
