"""Replacing a provider fairseq2 registered before a recipe's ``register`` runs.

fairseq2 0.8.1 registers its library (the value converter, the Hugging Face exporter)
first and has no public way to replace a provider; a recipe's ``register`` runs before
the first ``resolve()``, so removing the registration and adding ours is safe. The
container's internals are read in ``fairseq2_internals.py``; ``tests/test_bad_input.py``
and ``tests/test_export.py`` fail if replacing stops working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.utils.structured import StandardValueConverter, StructureError, ValueConverter

from fs2_semionline.glue.fairseq2_internals import remove_registration, require_methods


def replace_provider(
    container: DependencyContainer, kls: type[Any], provider: Callable[..., Any], *, singleton: bool = False
) -> None:
    remove_registration(container, kls)
    container.register(kls, provider, singleton=singleton)


STRICT_OVERRIDES = ("_structure_primitive", "_structure_list")
"""fairseq2's private methods :class:`StrictValueConverter` refines."""


class StrictValueConverter(StandardValueConverter):  # type: ignore[misc]
    """fairseq2's converter, minus two silent conversions of config values: a float with
    a fraction into an int (``regime.num_steps=2.5`` would run 2 steps) and a string into a
    list (``dataset.math_paths=a.jsonl`` would be read as one path per character)."""

    def _structure_primitive(self, origin_type: object, type_args: tuple[object, ...], obj: object) -> object:
        if origin_type is int and isinstance(obj, float) and not obj.is_integer():
            raise StructureError(f"Value must be an integer, but is {obj} instead.")
        return cast(object, super()._structure_primitive(origin_type, type_args, obj))

    def _structure_list(self, origin_type: object, type_args: tuple[object, ...], obj: object) -> list[object]:
        if isinstance(obj, str):
            raise StructureError(f"Value must be a list, but is the string {obj!r} instead: write [{obj}].")
        return cast(list[object], super()._structure_list(origin_type, type_args, obj))


def register_strict_values(container: DependencyContainer) -> None:
    """Makes fairseq2 structure the recipe config with :class:`StrictValueConverter`."""
    require_methods(StandardValueConverter, *STRICT_OVERRIDES)
    replace_provider(container, ValueConverter, lambda resolver: StrictValueConverter(), singleton=True)
