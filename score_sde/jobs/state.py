"""The state a training run checkpoints, and the step-0 state it starts from (also the restore
target of an eval, which reads only the EMA parameters and what the metrics' keys need)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde.sharding import put_replicated, replicated

Array = jax.Array
UNREAD_BY_EVAL = ("params", "opt_state")  # Checkpointer.restore(..., skip=UNREAD_BY_EVAL)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    step: Array  # int32 []: optimiser steps taken (skipped ones included)
    params: Any  # trainable parameters, float32
    ema_params: Any  # exponential moving average of params: its own buffers
    opt_state: Any
    rest: Any  # non-trainable model variables, never updated
    rng: Array  # uint32 key data of the run's base key
    bad_steps: Array  # int32 []: consecutive steps with a non-finite loss or gradient
    skipped: Array  # int32 []: all skipped steps


def init_state(
    seed: int, params, rest, mesh, optimizer: optax.GradientTransformation | None = None
) -> TrainState:
    """The step-0 state, replicated on ``mesh``; the EMA starts as a copy of params in buffers
    of its own (sharing them would fail under donation: "donate the same buffer twice").
    Without ``optimizer``, an eval's restore target: ``UNREAD_BY_EVAL`` fields are None."""
    params = put_replicated(params, mesh)
    # Placed as the train step returns them, so its first call does not compile it again.
    scalars = put_replicated(
        dict(
            step=np.int32(0),
            rest=rest,
            rng=np.asarray(jax.random.key_data(jax.random.key(seed))),
            bad_steps=np.int32(0),
            skipped=np.int32(0),
        ),
        mesh,
    )
    if optimizer is None:
        return TrainState(params=None, ema_params=params, opt_state=None, **scalars)
    return TrainState(
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=jax.jit(optimizer.init, out_shardings=replicated(mesh))(params),
        **scalars,
    )
