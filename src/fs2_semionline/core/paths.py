"""Where the package's own data lives (shipped as package data)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ASSETS_DIR = Path(str(files("fs2_semionline") / "assets"))
TINY_MATH_DIR = ASSETS_DIR / "tiny_math"
TINY_MATH_DATA_DIR = TINY_MATH_DIR / "data"
PRESETS_DIR = Path(str(files("fs2_semionline") / "presets"))
TINY_CHAT_DIR = ASSETS_DIR / "tiny_chat"
TINY_CHAT_DATA_DIR = TINY_CHAT_DIR / "data"
