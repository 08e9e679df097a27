"""Range checks of single config fields, reported through fairseq2's own ``validate()``.

Every section of ours implements ``validate()`` with :class:`FieldChecks`; fairseq2's
``ObjectValidator`` walks the config before anything loads and prints one line per run,
e.g. ``generator.temperature`` is not valid: must be >= 0 (0 = greedy), got -1.0.
Each error is a sub-result named after its field, so fairseq2 prints the full key.
Relations between keys live in ``recipes/checks.py``, not here.
"""

from __future__ import annotations

import math
from typing import Any

from fairseq2.utils.validation import ValidationResult


class FieldChecks:
    """Collects the errors of one section's fields (one sub-result per field)."""

    def __init__(self, section: Any) -> None:
        self._section = section
        self.result = ValidationResult()

    def fail(self, name: str, rule: str) -> None:
        sub = ValidationResult()
        sub.add_error(f"{rule}, got {getattr(self._section, name)!r}.")
        self.result.add_sub_result(name, sub)

    def _number(self, name: str, optional: bool) -> float | None:
        value = getattr(self._section, name)
        if value is None:
            if not optional:
                self.fail(name, "must be set")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, "must be a number")
            return None
        if not math.isfinite(value):
            self.fail(name, "must be finite")
            return None
        return float(value)

    def at_least(self, name: str, low: float, *, optional: bool = False, note: str = "") -> None:
        """``name >= low`` (``optional``: or null)."""
        value = self._number(name, optional)
        if value is not None and value < low:
            self.fail(name, f"must be >= {low}{note}" + (" or null" if optional else ""))

    def positive(self, name: str, *, optional: bool = False, note: str = "") -> None:
        """``name > 0`` (``optional``: or null)."""
        value = self._number(name, optional)
        if value is not None and not value > 0:
            self.fail(name, f"must be > 0{note}" + (" or null" if optional else ""))

    def within(
        self, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False, note: str = ""
    ) -> None:
        """``low <= name <= high`` (``low_open``/``high_open``: the bound excluded)."""
        value = self._number(name, False)
        if value is None:
            return
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            self.fail(name, f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}{note}")

    def finite(self, name: str) -> None:
        self._number(name, False)

    def one_of(self, name: str, prefixes: tuple[str, ...]) -> None:
        value = getattr(self._section, name)
        if not isinstance(value, str) or not value.startswith(prefixes):
            self.fail(name, "must be " + " or ".join(f"'{p}...'" for p in prefixes))
