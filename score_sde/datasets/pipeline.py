"""The grain input pipeline: shard, shuffle, repeat, batch, flip; checkpointable iterators.

Every batch is computed from its index alone, vectorised: stream positions -> (epoch,
offset) -> example indices through that epoch's permutation -> one ``source.read`` (a single
numpy gather for in-memory data). grain maps, shards, prefetches and checkpoints the batches.

The global stream is the same on every process: global batch j is positions
[j·P·B, (j+1)·P·B) of the (shuffled) stream, and process p reads positions j·P·B + p·B + [0, B)
of it. Random flips depend only on the seed and the stream position. Hence the global batches,
flips included, do not depend on the number of processes P for a fixed global batch size P·B,
and the flips not even on the batch size.

Batches are dicts of numpy arrays:
- ``x``: float32, images [B, H, W, C] in [0, 1] or vectors [B, D];
- ``label``: int32 [B], -1 when the data set is unlabelled;
- ``mask``: bool [B], False for the padding that completes the last batch of a single pass.

Iterators (``iter(ds)``) have ``get_state()`` / ``set_state(state)``: a small JSON-able dict
(``{"next_index": k}``). Restoring it into an iterator of a pipeline built with the same
arguments gives exactly the batches that followed when it was saved.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any, Protocol

import grain
import jax
import numpy as np


class Source(Protocol):
    """Random access to a split: ``read(indices) -> (x [B, ...], labels int32 [B])``; images are
    uint8 [B, H, W, C], vectors float32 [B, D]."""

    num_classes: int  # 0 when unlabelled (labels -1)

    @property
    def element_shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_batching(
    batch_size: int, seed: int, shard_index: int | None, shard_count: int | None
) -> tuple[int, int]:
    """Validates the batching arguments; returns this process's (shard_index, shard_count),
    which default to jax.process_index() / jax.process_count()."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size!r} must be a positive integer: the per-process batch size "
            "(the global config.training.batch_size / config.eval.batch_size divided by the "
            "number of processes)."
        )
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2**32).")
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    if not _is_int(count) or count < 1 or not _is_int(index) or not 0 <= index < count:
        raise ValueError(
            f"shard_index={index!r}, shard_count={count!r}: need integers with "
            "0 <= shard_index < shard_count."
        )
    return index, count


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of the n examples in ``epoch``: a permutation drawn from (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def coin_flips(seed: int, positions: np.ndarray) -> np.ndarray:
    """A fair coin for each stream position, a pure function of (seed, position): the top bit
    of the splitmix64 hash of seed·2³² + position."""
    z = (np.uint64(seed) << np.uint64(32)) + positions.astype(np.uint64)
    z = z * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((z ^ (z >> np.uint64(31))) >> np.uint64(63)).astype(bool)


def stream_indices(positions: np.ndarray, n: int, seed: int, shuffle: bool) -> np.ndarray:
    """Example index at each stream position: epoch e = position // n is the e-th permutation
    of range(n) (or range(n) itself without ``shuffle``)."""
    epoch, offset = np.divmod(positions, n)
    if not shuffle:
        return offset
    indices = np.empty_like(offset)
    for e in np.unique(epoch):
        here = epoch == e
        indices[here] = _epoch_order(seed, int(e), n)[offset[here]]
    return indices


def _read_batch(
    source: Source,
    batch_size: int,
    seed: int,
    shuffle: bool,
    random_flip: bool,
    stream_end: int | None,
    batch_index: int,
) -> dict[str, np.ndarray]:
    """Batch ``batch_index`` of the stream (positions past ``stream_end`` are padding)."""
    positions = batch_index * batch_size + np.arange(batch_size)
    mask = np.ones(batch_size, bool) if stream_end is None else positions < stream_end
    x, label = source.read(stream_indices(np.where(mask, positions, 0), len(source), seed, shuffle))
    if x.dtype == np.uint8:
        if random_flip:
            flip = coin_flips(seed, positions)[:, None, None, None]
            x = np.where(flip, x[:, :, ::-1], x)
        x = x.astype(np.float32) / 255.0
    x, label = x.astype(np.float32, copy=False), label.astype(np.int32, copy=False)
    return {"x": x, "label": label, "mask": mask}


def batches(
    source: Source,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    random_flip: bool = False,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = 2,
    prefetch: int = 4,
) -> grain.IterDataset:
    """Batches of ``source`` for this process (batch_size per process).

    - ``shuffle``: a new permutation of the split every epoch, from ``seed``.
    - ``repeat``: an endless stream (batches may span two epochs); otherwise a single pass,
      whose last global batch is padded (``mask`` False) or, with ``drop_remainder``, dropped.
    - ``random_flip``: flip images left-right with probability ½, a function of (seed, stream
      position) only.
    - ``shard_index`` / ``shard_count``: default to jax.process_index() / process_count().
    - ``num_threads`` reading threads and ``prefetch`` batches read ahead.
    """
    index, count = check_batching(batch_size, seed, shard_index, shard_count)
    if random_flip and len(source.element_shape) != 3:
        raise ValueError(
            f"random_flip=True needs images; this data set has elements of shape "
            f"{source.element_shape} (config.data.random_flip=False for vector data)."
        )
    n, global_batch = len(source), batch_size * count
    if n == 0:
        raise ValueError("the split has no examples.")
    if repeat:
        num_global, stream_end = sys.maxsize // count, None
    elif drop_remainder:
        if n < global_batch:
            raise ValueError(
                f"batch_size={batch_size} x {count} processes = {global_batch} exceeds the "
                f"{n} examples of the split: drop_remainder=True would leave no batch."
            )
        num_global, stream_end = n // global_batch, None
    else:
        num_global, stream_end = math.ceil(n / global_batch), n
    read = functools.partial(
        _read_batch, source, batch_size, seed, shuffle, random_flip, stream_end
    )
    # B-batch k of the stream is global batch k // P's share for process k % P.
    local = grain.MapDataset.range(num_global * count).map(read)[index::count]
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return local.to_iter_dataset(options)
