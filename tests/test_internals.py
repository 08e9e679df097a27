"""The reaches into fairseq2's and Ray's private attributes hold on the installed
versions, and fail loudly, naming the module to update, where an attribute is gone.
(vLLM's are run by ``tests/test_vllm_tp.py``; the token encoders' by
``tests/test_tokenizer_templates.py``.)"""

from __future__ import annotations

import pytest
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.utils.structured import StandardValueConverter, StructureError, ValueConverter

from fs2_semionline.glue.container import STRICT_OVERRIDES, StrictValueConverter, register_strict_values
from fs2_semionline.glue.fairseq2_internals import Fairseq2InternalsChanged, remove_registration, require_methods
from fs2_semionline.glue.ray_internals import RayInternalsChanged, actor_id_hex


def test_a_provider_fairseq2_registered_is_replaced() -> None:
    container = DependencyContainer()
    container.register(ValueConverter, lambda resolver: StandardValueConverter(), singleton=True)
    register_strict_values(container)  # without the removal, fairseq2 refuses a second provider
    assert isinstance(container.resolve(ValueConverter), StrictValueConverter)
    assert list(container.iter_keys(ValueConverter)) == [None]
    assert remove_registration(container, ValueConverter) and not remove_registration(container, ValueConverter)
    with pytest.raises(Fairseq2InternalsChanged, match="DependencyContainer's providers"):
        remove_registration(object(), ValueConverter)


def test_the_strict_converter_overrides_methods_fairseq2_has() -> None:
    require_methods(StandardValueConverter, *STRICT_OVERRIDES)
    for value, kls, says in ((2.5, int, "must be an integer"), ("a.jsonl", list[str], "write [a.jsonl]")):
        with pytest.raises(StructureError) as err:
            StrictValueConverter().structure(value, kls)
        assert says in f"{err.value} {err.value.__cause__}"
    assert StrictValueConverter().structure(2.0, int) == 2
    with pytest.raises(Fairseq2InternalsChanged, match="no method '_structure_list'"):
        require_methods(object, "_structure_list")


def test_a_ray_actor_is_named_by_its_id(ray_cluster) -> None:
    import ray

    @ray.remote(num_cpus=0)
    class Probe:
        def own_id(self) -> str:
            return ray.get_runtime_context().get_actor_id()

    probe = Probe.remote()  # type: ignore[attr-defined]
    try:
        assert actor_id_hex(probe) == ray.get(probe.own_id.remote(), timeout=60)
    finally:
        ray.kill(probe)
    with pytest.raises(RayInternalsChanged, match="glue/ray_internals.py needs updating"):
        actor_id_hex(object())
