"""Device meshes and the placement of host data on them (one 1-D data-parallel mesh).

A global batch is split along its first axis over the mesh's "data" axis; parameters are
replicated. Across processes (``jax.distributed``), each process passes its own rows of a
global batch (``put_global``) or the same full value (``put_replicated``); ``gather`` brings a
global array, or each process's rows, back to every host.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

Array = jax.Array
DATA_AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes), axis "data"."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_replicated(tree, mesh):
    """Place a host pytree on every device of ``mesh`` (works across processes: each process
    passes the same full value)."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
    )


def put_global(tree, mesh, axis: int = 0):
    """Assemble global arrays from each process's slice, sharded along "data" on ``axis`` (the
    batch axis): process p's rows are rows p·B_local + [0, B_local) of the global batch."""
    sharding = NamedSharding(mesh, P(*[None] * axis, DATA_AXIS))
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
    )


def put_batches(batches: list[dict], mesh) -> dict[str, Array]:
    """This process's ``k`` batches as global [k, B, ...] arrays (one scan step per row)."""
    return put_global(jax.tree.map(lambda *a: np.stack(a), *batches), mesh, axis=1)


def batch_sharding(mesh) -> NamedSharding:
    """Arrays split along their first axis over the mesh."""
    return NamedSharding(mesh, P(DATA_AXIS))


def gather(x) -> np.ndarray:
    """On every process, the whole of ``x``: a global jax.Array, or this process's rows of a
    host array (concatenated in process order; every process passes the same shape)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
