"""The package's folders form layers: a module imports only from its own folder or from
a folder of a lower layer (read from the source with ``ast``: lazy imports inside
functions count too). A new arrow upwards fails here, naming the file and the import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fs2_semionline

ROOT = Path(fs2_semionline.__file__).parent

LAYERS: list[set[str]] = [
    {"core", "losses", "assets"},  # errors, metrics, seeds, paths; the pure loss maths; package data
    {"config"},  # every section, the presets
    {"glue"},  # fairseq2, Hugging Face and Ray glue
    {"data"},  # prompts, templates, encoding, batches, dataset preparation
    {"rewards"},  # Math-Verify, reward models
    {"generation"},  # samplers, vLLM engines, weight sync
    {"objectives"},  # selection + loss per objective
    {"eval"},  # accuracy, evaluation sets
    {"units"},  # fairseq2 train and eval units
    {"runs"},  # a run's folder: checkpoints, resume, export
    {"recipes"},  # fairseq2 recipes: they compose the layers below
    {"tools", "tiny"},  # demo, study, plots, config reference; tiny-asset builders
    {"cli"},  # the command
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _folder(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fs2_semionline."):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("fs2_semionline.")]
    return found


def test_every_folder_has_a_layer() -> None:
    folders = {_folder(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert folders <= set(RANK), sorted(folders - set(RANK))


def test_no_import_goes_up_a_layer() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        here = _folder(path)
        if here == "__init__":
            continue
        for module in _imports(path):
            there = module.split(".")[1]
            if there != here and RANK[there] > RANK[here]:
                upward.append(f"{path.relative_to(ROOT)} imports {module} ({here} is below {there})")
    assert not upward, "\n".join(upward)


def test_the_package_root_holds_only_the_command() -> None:
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["__init__.py", "cli.py"]


def _readme_layout() -> dict[str, set[str]]:
    """The words of each folder's entry in the README's layout (continuation lines included)."""
    readme = (ROOT.parents[1] / "README.md").read_text()
    block = readme[readme.index("## Layout") :].split("```")[1]
    entries: dict[str, set[str]] = {}
    folder = None
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            folder = line.split()[0].rstrip("/")
            entries[folder] = set()
        elif not line.startswith("   "):
            folder = None
        if folder is not None:
            entries[folder] |= set(re.findall(r"[a-z_0-9]+", line))
    return entries


def test_the_readme_layout_names_every_module_in_its_folder() -> None:
    entries = _readme_layout()
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted(ROOT.rglob("*.py"))
        if path.stem not in ("__init__", "__main__")
        and len(path.relative_to(ROOT).parts) > 1
        and path.stem not in entries.get(path.relative_to(ROOT).parts[0], set())
    ]
    assert not missing, f"README.md's layout does not name: {missing}"
