"""The objectives as fairseq2 components: ``loss.name`` picks one, ``loss.config`` is
that objective's own config class, structured by fairseq2's component manager, as
fairseq2's ``optimizer`` and ``lr_scheduler`` sections do.

    loss:
      name: grpo          # dpo | group_dpo | grpo | group_dpo_grpo
      config:
        kl_beta: 0.001    # a key of GRPOConfig

The section lives here, not in ``config/``, because its ``structure`` needs the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

from fairseq2.recipe.component import ComponentManager, ComponentNotKnownError, register_component
from fairseq2.recipe.config import SupportsStructure, structure_component_config
from fairseq2.runtime.dependency import DependencyContainer, DependencyResolver
from fairseq2.utils.structured import ValueConverter
from fairseq2.utils.validation import ValidationResult

from fs2_semionline.config.fields import FieldChecks
from fs2_semionline.config.training import DPOConfig, GroupDPOConfig, GroupDPOGRPOConfig, GRPOConfig
from fs2_semionline.core.errors import ConfigError
from fs2_semionline.core.metrics import Metric, metrics_of
from fs2_semionline.objectives.base import Objective, Traits
from fs2_semionline.objectives.dpo import DPOObjective
from fs2_semionline.objectives.group_dpo import GroupDPOGRPOObjective, GroupDPOObjective
from fs2_semionline.objectives.grpo import GRPOObjective

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class ObjectiveEntry(Generic[ConfigT]):
    """One ``loss.name``: the strategy class, its config class, and how one is made."""

    kls: type[Objective[Any]]
    config_kls: type[ConfigT]
    create: Callable[[ConfigT], Objective[Any]]


OBJECTIVES: dict[str, ObjectiveEntry[Any]] = {
    "dpo": ObjectiveEntry(DPOObjective, DPOConfig, DPOObjective),
    "group_dpo": ObjectiveEntry(GroupDPOObjective, GroupDPOConfig, GroupDPOObjective),
    "grpo": ObjectiveEntry(GRPOObjective, GRPOConfig, GRPOObjective),
    "group_dpo_grpo": ObjectiveEntry(GroupDPOGRPOObjective, GroupDPOGRPOConfig, GroupDPOGRPOObjective),
}
DEFAULT_OBJECTIVE = "dpo"


@dataclass(kw_only=True)
class LossSection(SupportsStructure):
    """The objective (paper Eqs. 1, 3, 4; Table 4)."""

    name: str = DEFAULT_OBJECTIVE
    """``dpo`` (Eq. 3), ``group_dpo`` (Eq. 4), ``grpo`` (Eq. 1), ``group_dpo_grpo`` (§4.2)."""
    config: object = field(default_factory=DPOConfig)
    """The named objective's own keys (tables below)."""
    entropy_coef: float = 0.0
    """Any objective: weight of the mean negative entropy of rollout tokens (§4.2; 0 = off)."""

    @staticmethod
    def config_kinds() -> dict[str, type]:
        """``name`` → the class of ``config`` (read by the configuration reference)."""
        return {name: entry.config_kls for name, entry in OBJECTIVES.items()}

    def structure(self, resolver: DependencyResolver) -> None:
        """``config`` as the named objective's config class. Keys the merge carried over
        from the default objective's config, at their default values, are dropped, so
        that ``loss.name=grpo`` alone works; any other foreign key is an error naming it."""
        raw = self.config
        if isinstance(raw, Mapping):
            default = resolver.resolve(ValueConverter).unstructure(OBJECTIVES[DEFAULT_OBJECTIVE].config_kls())
            raw = own_keys(self.name, raw, default)
        try:
            self.config = structure_component_config(resolver, Objective, self.name, raw)
        except ComponentNotKnownError:
            raise ConfigError(f"loss.name={self.name} is not registered as an objective") from None

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.finite("entropy_coef")
        entry = OBJECTIVES.get(self.name)
        if entry is None:
            checks.result.add_error(f"`name` must be one of {', '.join(OBJECTIVES)}, got {self.name!r}.")
        elif not isinstance(self.config, entry.config_kls):
            kind = type(self.config).__name__
            checks.result.add_error(f"`config` must be a {entry.config_kls.__name__} for name={self.name}, got {kind}.")
        return checks.result


def own_keys(name: str, raw: Mapping[str, object], default: object) -> dict[str, object]:
    """``raw`` without the default objective's keys left at their defaults by the merge
    (when ``name`` is another objective); a foreign key set by the user is a ConfigError
    naming it and the objectives that have it."""
    known = {f.name for f in fields(objective_entry(name).config_kls)}
    defaults = default if isinstance(default, Mapping) and name != DEFAULT_OBJECTIVE else {}
    out: dict[str, object] = {}
    for key, value in raw.items():
        if key in known:
            out[key] = value
        elif key in defaults and defaults[key] == value:
            continue
        else:
            owners = [n for n, e in OBJECTIVES.items() if key in {f.name for f in fields(e.config_kls)}]
            where = f" (a key of loss.name={', '.join(owners)})" if owners else ""
            raise ConfigError(
                f"loss.config.{key}: not a key of loss.name={name}{where}; its keys: {', '.join(sorted(known))}"
            )
    return out


def register_objectives(container: DependencyContainer) -> None:
    """Each objective as a fairseq2 component ``(Objective, name)`` with its config class."""
    for name, entry in OBJECTIVES.items():
        register_component(
            container,
            Objective,  # type: ignore[type-abstract]
            name,
            entry.config_kls,
            lambda resolver, config, entry=entry: entry.create(config),
        )


def create_objective(resolver: DependencyResolver, section: LossSection) -> Objective[Any]:
    """The configured objective, made by fairseq2's component manager."""
    manager = resolver.resolve(ComponentManager)
    return manager.create_component(Objective, section.name, section.config)  # type: ignore[type-abstract]


def build_objective(section: LossSection) -> Objective[Any]:
    """The same objective without a container (unit tests, tools)."""
    return objective_entry(section.name).create(section.config)


def objective_entry(name: str) -> ObjectiveEntry[Any]:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"loss.name: unknown objective {name!r}; known: {', '.join(OBJECTIVES)}") from None


def objective_traits(name: str) -> Traits:
    """What ``loss.name`` accepts (its class's declaration)."""
    return objective_entry(name).kls.TRAITS


def objectives_with(trait: str) -> list[str]:
    """The ``loss.name`` values whose objective declares ``trait``."""
    return [name for name, entry in OBJECTIVES.items() if getattr(entry.kls.TRAITS, trait)]


def objectives_configured_by(kls: type) -> list[str]:
    """The ``loss.name`` values whose config class is a ``kls``."""
    return [name for name, entry in OBJECTIVES.items() if issubclass(entry.config_kls, kls)]


def all_objective_metrics() -> dict[str, Metric]:
    """Every metric any objective can log (registered as fairseq2 descriptors)."""
    out: dict[str, Metric] = {}
    for entry in OBJECTIVES.values():
        out |= metrics_of(entry.kls.TERMS)
    return out
