"""Named YAML configurations shipped with the package (``--preset NAME``).

A preset is a fairseq2 config file whose first comment lines say which recipe it is
for and what it does (``# recipe: NAME`` and ``# about: ...``). ``--config-file`` and
``--config`` apply on top of it, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.core.paths import PRESETS_DIR


@dataclass(frozen=True)
class Preset:
    name: str
    recipe: str
    about: str
    path: Path


def _header(path: Path) -> dict[str, str]:
    header: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line.lstrip("# ").partition(":")
        if sep:
            header[key.strip()] = value.strip()
    return header


def list_presets(presets_dir: Path = PRESETS_DIR) -> list[Preset]:
    presets = []
    for path in sorted(presets_dir.glob("*.yaml")):
        header = _header(path)
        if "recipe" not in header:
            raise ValueError(f"{path}:1: preset has no '# recipe: NAME' header line")
        presets.append(Preset(path.stem, header["recipe"], header.get("about", ""), path))
    return presets


def get_preset(name: str, recipe: str) -> Preset:
    presets = {p.name: p for p in list_presets()}
    if name not in presets:
        raise ConfigError(f"--preset {name}: no such preset. Known presets: {', '.join(sorted(presets))}")
    preset = presets[name]
    if preset.recipe != recipe:
        raise ConfigError(f"--preset {name} is for `lm {preset.recipe}`, not `lm {recipe}`")
    return preset


def merged_config_file(preset: Preset, user_file: Path | None) -> Path:
    """The preset itself, or the preset with the user's config file merged on top."""
    if user_file is None:
        return preset.path
    from tempfile import NamedTemporaryFile

    from fairseq2.utils.config import ReplacePathDirective, StandardConfigMerger, StandardConfigProcessor

    def load(path: Path) -> object:
        # ``${dir}`` means the folder of the file it is written in (fairseq2's rule), so it
        # is expanded before the merged file moves elsewhere.
        if not path.is_file():
            raise ConfigError(f"--config-file {path}: no such file")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as ex:
            raise ConfigError(f"--config-file {path} is not valid YAML: {' '.join(str(ex).split())}") from None
        return StandardConfigProcessor([]).process(raw, [ReplacePathDirective(path.resolve().parent)])

    merged = StandardConfigMerger().merge(load(preset.path), load(user_file))
    with NamedTemporaryFile("w", suffix=".yaml", prefix=f"{preset.name}-", delete=False) as f:
        yaml.safe_dump(merged, f, sort_keys=False)
    return Path(f.name)
