"""Every reach into fairseq2's private attributes, in one place, each loud.

fairseq2 0.8.1 gives no public way to

- the library under a raw token encoder, whose special-token set
  :mod:`~fs2_semionline.data.encoding` needs;
- replace a provider it registered itself (the value converter, the Hugging Face
  exporter: :mod:`~fs2_semionline.glue.container`);
- refine how its value converter structures an int or a list (the two methods
  ``StrictValueConverter`` overrides).

A fairseq2 that renames anything read here raises :class:`Fairseq2InternalsChanged`
naming it, instead of a silently different special-token set, a provider registered
twice or an override that is never called; ``tests/test_internals.py`` and
``tests/test_tokenizer_templates.py`` run every reader against the installed fairseq2.
"""

from __future__ import annotations

from typing import Any


class Fairseq2InternalsChanged(RuntimeError):
    """A private attribute this package reads is gone from the installed fairseq2."""


def _attribute(obj: Any, name: str, where: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise Fairseq2InternalsChanged(
            f"fairseq2's {type(obj).__name__} has no attribute {name!r} ({where}): "
            "fs2_semionline/glue/fairseq2_internals.py needs updating for this fairseq2"
        ) from None


def hf_tokenizer_of(encoder: Any) -> Any | None:
    """The transformers tokenizer under a fairseq2 ``HuggingFaceTokenEncoder`` (None for
    another kind of encoder)."""
    from fairseq2.data.tokenizers.hg import HuggingFaceTokenEncoder

    if not isinstance(encoder, HuggingFaceTokenEncoder):
        return None
    model = _attribute(encoder, "_model", "HuggingFaceTokenEncoder's token model")
    return _attribute(model, "_tok", "HuggingFaceTokenModel's transformers tokenizer")


def tiktoken_encoding_of(encoder: Any) -> Any | None:
    """The tiktoken ``Encoding`` under a fairseq2 ``TiktokenEncoder`` (None otherwise)."""
    from fairseq2.data.tokenizers.tiktoken import TiktokenEncoder

    if not isinstance(encoder, TiktokenEncoder):
        return None
    return _attribute(encoder, "_encoding", "TiktokenEncoder's encoding")


def remove_registration(container: Any, kls: type[Any]) -> bool:
    """Drops the unkeyed provider of ``kls`` from a ``DependencyContainer`` (True if
    there was one), so that ``register`` may add ours."""
    registrations = _attribute(container, "_registrations", "DependencyContainer's providers")
    keys = _attribute(container, "_keys", "DependencyContainer's keys per type")
    if registrations.pop((kls, None), None) is None:
        return False
    keys[kls].remove(None)
    return True


def require_methods(kls: type[Any], *names: str) -> None:
    """The private methods a subclass of ``kls`` overrides exist on ``kls`` (else the
    override would silently never run)."""
    for name in names:
        if not callable(getattr(kls, name, None)):
            raise Fairseq2InternalsChanged(
                f"fairseq2's {kls.__name__} has no method {name!r} (overridden by fs2_semionline): "
                "fs2_semionline/glue/fairseq2_internals.py needs updating for this fairseq2"
            )
