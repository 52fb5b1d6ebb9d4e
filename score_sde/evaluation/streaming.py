"""Streaming images through the FID Inception, over devices and processes, into statistics.

Each global batch (the same on every process) is split over the processes; each runs its rows
on its own devices and the outputs are gathered, so every process accumulates the same float64
statistics whatever the process count. ``Accumulator`` holds them: the features' mean and
covariance, the Inception Score's per-split sums and the first ``keep`` features (for KID,
precision/recall and density/coverage); it saves to and loads from arrays, so a long evaluation
can resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from score_sde import sharding
from score_sde.evaluation.features import Inception, pad_rows
from score_sde.evaluation.inception import CLASSES, FEATURES
from score_sde.evaluation.stats import FeatureStats, InceptionScoreStats


def inception_outputs(
    inception: Inception, batches: Iterable[tuple[np.ndarray, int]], bar: tqdm
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(features, logits or None) of the first ``valid`` rows of each (global uint8 batch,
    valid), the batch the same on every process: each process runs its share of the rows on
    its own devices, and the outputs are gathered."""
    p, count = jax.process_index(), jax.process_count()
    for batch, valid in batches:
        if len(batch) % count:
            raise ValueError(f"a batch of {len(batch)} does not split over {count} processes.")
        rows = np.split(batch, count)[p]
        mine = int(np.clip(valid - p * len(rows), 0, len(rows)))  # padding is not computed
        outputs = inception.outputs(rows[:mine])
        bar.update(valid)
        features, logits = (None if a is None else pad_rows(a, len(rows)) for a in outputs)
        features = sharding.gather(features)[:valid]
        yield features, None if logits is None else sharding.gather(logits)[:valid]


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """Streaming Inception statistics: features' mean and covariance, the Inception Score's
    per-split sums (with logits) and the first ``keep`` features."""

    stats: FeatureStats
    score: InceptionScoreStats | None
    kept: np.ndarray
    keep: int

    @classmethod
    def empty(cls, total: int, keep: int, logits: bool) -> Accumulator:
        score = InceptionScoreStats.empty(total, CLASSES) if logits else None
        kept = np.zeros((0, FEATURES), np.float32)
        return cls(FeatureStats.empty(FEATURES), score, kept, keep)

    def update(self, features: np.ndarray, logits: np.ndarray | None) -> Accumulator:
        start = self.stats.n
        score = None if self.score is None else self.score.update(logits, start)
        kept = self.kept
        if len(kept) < self.keep:
            kept = np.concatenate([kept, features[: self.keep - len(kept)]])
        return Accumulator(self.stats.update(features), score, kept, self.keep)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"stats_{k}": v for k, v in self.stats.to_arrays().items()}
        if self.score is not None:
            arrays |= {f"score_{k}": v for k, v in self.score.to_arrays().items()}
        return arrays | {"kept": self.kept, "keep": np.asarray(self.keep)}

    @classmethod
    def from_arrays(cls, a) -> Accumulator:
        def part(prefix):
            return {k[len(prefix) :]: a[k] for k in a if k.startswith(prefix)}

        score = part("score_")
        return cls(
            FeatureStats.from_arrays(part("stats_")),
            InceptionScoreStats.from_arrays(score) if score else None,
            np.asarray(a["kept"]),
            int(a["keep"]),
        )


def accumulate(
    inception: Inception, batches: Iterable[tuple[np.ndarray, int]], acc: Accumulator, bar
) -> Accumulator:
    """``acc`` updated with the Inception outputs of (uint8 batch, valid rows) ``batches``."""
    for features, logits in inception_outputs(inception, batches, bar):
        acc = acc.update(features, logits)
    return acc


def progress_bar(total: int, initial: int, desc: str, progress: bool) -> tqdm:
    """Images through Inception, with images/s."""
    off = not progress or jax.process_index() != 0
    return tqdm(total=total, initial=initial, unit="img", desc=desc, disable=off)


def batches_of(images: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(batch padded to ``size`` rows, number of real rows) over ``images``: one shape for
    Inception's compiled program and an equal split over processes."""
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        yield pad_rows(chunk, size), len(chunk)


def to_uint8(x):
    """Images in [0, 1] quantised as a PNG would hold them."""
    return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)
