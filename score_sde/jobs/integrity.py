"""Checkpoint integrity: a CRC-32 of every saved array, kept beside it and checked on restore,
and the damaged checkpoints moved aside (never deleted) so a run resumes from an older one.

A bit flipped on disk can restore without any error from orbax or tensorstore; only a
checksum of the values tells. Multi-process jobs agree on the verdict (``all_agree``), so
that every process falls back to the same step.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import zlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


class DamagedCheckpointError(RuntimeError):
    """A checkpoint that cannot be read or whose arrays fail their checksums."""


def key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flat_leaves(tree) -> Iterator[tuple[str, Any]]:
    """("params/conv/kernel", leaf) for each leaf (flax's trailing ``.value`` dropped)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [key_name(k) for k in path]
        if names and names[-1] == "value":
            names = names[:-1]
        yield "/".join(names), leaf


def _host_value(leaf) -> np.ndarray | None:
    """The leaf's whole value on this host, or None for an array split across processes."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            return None
        leaf = leaf.addressable_data(0)
    return np.ascontiguousarray(jax.device_get(leaf))


def checksums(tree) -> dict[str, str]:
    """{leaf path: CRC-32 of its bytes, dtype and shape} for the leaves this host holds whole."""
    out = {}
    for name, leaf in flat_leaves(tree):
        value = _host_value(leaf)
        if value is not None:
            head = f"{value.dtype}{value.shape}".encode()
            out[name] = f"{zlib.crc32(value.tobytes(), zlib.crc32(head)):08x}"
    return out


def verify(tree, expected: dict[str, str], where: str) -> None:
    """Raise ``DamagedCheckpointError`` if a leaf of ``tree`` differs from its checksum."""
    got = checksums(tree)
    bad = sorted(name for name in got if name in expected and got[name] != expected[name])
    if bad:
        raise DamagedCheckpointError(
            f"{where}: {len(bad)} array(s) fail their checksum ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''})"
        )


def all_agree(ok: bool) -> bool:
    """True when ``ok`` holds on every process."""
    if jax.process_count() == 1:
        return ok
    return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def move_aside(directory: str, step: int, to: str) -> str:
    """Move checkpoint ``step`` of ``directory`` into the folder ``to`` (process 0; the others
    wait for it); returns its new path."""
    target = os.path.join(to, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
        os.makedirs(to, exist_ok=True)
        os.replace(os.path.join(directory, str(step)), target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"moved checkpoint {step} aside")
    return target


def _orbax_leftover(unraisable) -> bool:
    code = getattr(unraisable.object, "cr_code", None)
    closed = isinstance(unraisable.exc_value, RuntimeError) and "loop is closed" in str(
        unraisable.exc_value
    )
    return closed or (code is not None and "orbax" in code.co_filename)


def silence_failed_reads() -> None:
    """After a failed restore, orbax's other pending reads fail too as they are collected, each
    printing a traceback that would bury the one line saying what happened: drop those."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_orbax_leftovers", False):
        return

    def hook(unraisable) -> None:
        if not _orbax_leftover(unraisable):
            previous(unraisable)

    hook.drops_orbax_leftovers = True
    sys.unraisablehook = hook
    gc.collect()
