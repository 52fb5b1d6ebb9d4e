"""Frozen dataclasses as pytrees whose treedefs tell their classes apart."""

from __future__ import annotations

import dataclasses

import jax


def frozen(cls: type, data: list[str], meta: list[str]) -> type:
    """``cls`` as a frozen dataclass registered as a pytree: ``data`` fields are leaves (keyed
    by attribute, as ``register_dataclass`` keys them), ``meta`` fields static. Not
    ``register_dataclass``: its treedefs of two classes with equal meta (VPSDE and SubVPSDE)
    compare equal though their hashes differ, so a jit cache could run a program traced for one
    class on the other (seen in tests under jax 0.10; the equality holds under 0.12 too)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    keys = [jax.tree_util.GetAttrKey(name) for name in data]

    def flatten(obj):
        return [getattr(obj, name) for name in data], tuple(getattr(obj, name) for name in meta)

    def flatten_with_keys(obj):
        leaves, aux = flatten(obj)
        return list(zip(keys, leaves, strict=True)), aux

    def unflatten(aux, leaves):
        return cls(**dict(zip(data, leaves, strict=True)), **dict(zip(meta, aux, strict=True)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls
