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

import sys

from fs2_semionline.config.presets import list_presets
from fs2_semionline.core.errors import ConfigError, UserInputError, exit_with
from fs2_semionline.recipes import RECIPES, run_recipe

USAGE = """usage: fs2-semionline presets
       fs2-semionline plot RUN_DIR [RUN_DIR ...] [--out DIR] [--metric NAME] [--smooth N]
       fs2-semionline data {numinamath,wildchat,math500,amc23} IN... --out DIR [...]
       fs2-semionline export RUN_DIR|CHECKPOINT OUT_DIR [--step N | --best] [--dtype D]
       fs2-semionline lm RECIPE OUT_DIR [--preset NAME] [--config-file F] [--config k=v ...]

recipes: """ + ", ".join(RECIPES)


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
        from fs2_semionline.runs.export import main as export_main

        export_main(argv[1:])
        return
    if argv[0] == "plot":
        from fs2_semionline.tools.plot import main as plot_main

        plot_main(argv[1:])
        return
    if argv[0] == "lm" and len(argv) >= 2:
        run_recipe(argv[1], argv[2:])
        return
    raise ConfigError(f"unknown command {' '.join(argv[:2])!r}\n{USAGE}")


if __name__ == "__main__":
    main()
