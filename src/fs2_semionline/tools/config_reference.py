"""Writes docs/configuration.md from the recipes' config dataclasses themselves.

Every key, its default and its docstring (the string literal under the field, read
from the source) come from the code, so the reference cannot drift from it; a test
checks that the committed file equals a fresh rendering.

    python -m fs2_semionline.tools.config_reference > docs/configuration.md
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from functools import cache
from typing import Any

HEADER = """# Configuration reference

Generated from the code by `python -m fs2_semionline.tools.config_reference` (a test keeps it in
sync). Keys are set in a YAML file (`--config-file`), a preset (`--preset`) or on the command
line (`--config section.key=value`); `fs2-semionline lm RECIPE OUT --dump-config` prints the
merged result. Sections without a description are fairseq2's own (see fairseq2's docs).
"""


def _field_docs(kls: type) -> dict[str, str]:
    """Field docstrings: a string literal right after an annotated assignment, in the
    class or in a base it inherits the field from (the nearest one wins)."""
    docs: dict[str, str] = {}
    for base in reversed(kls.__mro__):
        if dataclasses.is_dataclass(base):
            docs |= _own_field_docs(base)
    return docs


@cache
def _own_field_docs(kls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(kls)))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        members = typing.get_args(tp)
        if type(None) in members and len(members) == 2:  # X | None
            return _type_name(next(m for m in members if m is not type(None))) + " or None"
        if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
            return " or ".join(_type_name(m) for m in members)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "None")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value!r}`" if value else "`''`"
    if isinstance(value, (list, tuple)) and len(value) > 3:
        return f"`[{value[0]!r}, ... {len(value)} items]`"
    text = repr(value)
    for prefix in ("PosixPath(", "WindowsPath("):
        text = text.replace(prefix, "Path(")
    if "site-packages" in text or "/src/fs2_semionline/" in text:
        text = text.split("fs2_semionline/", 1)[-1].rstrip("')]") + " (in the package)"
    return f"`{text}`"


def _rows(obj: Any, prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    hints = typing.get_type_hints(type(obj))
    docs = _field_docs(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            rows += _rows(value, key + ".")
        else:
            rows.append((key, _type_name(hints.get(f.name, f.type)), _value(value), docs.get(f.name, "")))
    return rows


_HEAD = "\n| key | type | default | meaning |\n|---|---|---|---|"


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = [f"| `{key}` | {tp} | {default} | {doc.replace('|', chr(92) + '|')} |" for key, tp, default, doc in rows]
    return [*lines, ""]


def render(recipes: dict[str, type]) -> str:
    out = [HEADER]
    for recipe, kls in recipes.items():
        config = kls()
        out.append(f"\n## `lm {recipe}`\n")
        for f in dataclasses.fields(config):
            section = getattr(config, f.name)
            out.append(f"\n### `{f.name}`\n")
            doc = inspect.getdoc(type(section)) or ""
            auto_doc = doc.startswith(type(section).__name__ + "(")  # dataclass's generated one
            if doc and not auto_doc and type(section).__module__.startswith("fs2_semionline"):
                out.append(doc.splitlines()[0] + "\n")
            out.append(_HEAD)
            if dataclasses.is_dataclass(section):
                rows = _rows(section, f"{f.name}.")
            else:
                rows = [(f.name, _type_name(f.type), _value(section), "")]
            kinds = getattr(section, "config_kinds", None)
            if kinds:  # one row for ``config``; its keys per name in the tables below
                inner = f"{f.name}.config."
                first = next(i for i, r in enumerate(rows) if r[0].startswith(inner))
                doc = _field_docs(type(section)).get("config", "")
                rows = [r for r in rows if not r[0].startswith(inner)]
                rows.insert(first, (f"{f.name}.config", "by name", "the name's defaults", doc))
            out += _table(rows)
            for name, config_kls in (kinds() if kinds else {}).items():
                # A section whose ``config`` is the named component's own class (fairseq2's pattern).
                out.append(f"\n#### `{f.name}.config` with `{f.name}.name={name}`\n")
                out.append((inspect.getdoc(config_kls) or "").splitlines()[0] + "\n")
                out.append(_HEAD)
                out += _table(_rows(config_kls(), f"{f.name}.config."))
    return "\n".join(out).rstrip() + "\n"


def recipe_configs() -> dict[str, type]:
    from fs2_semionline.config.evaluate import EvaluateConfig
    from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig

    return {"preference_finetune": PreferenceFinetuneConfig, "evaluate": EvaluateConfig}


def main() -> None:
    print(render(recipe_configs()), end="")


if __name__ == "__main__":
    main()
