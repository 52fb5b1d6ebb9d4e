"""Data sets and the input pipeline.

``DATASETS`` maps each name to a builder of a random-access source. ``get_dataset`` turns one
split into batches for this process (a grain ``IterDataset`` with checkpointable iterators);
``dataset_info`` gives the element shape, size and number of classes without reading batches.
A split may be sliced as in tensorflow-datasets, ``"test[:1000]"`` or ``"train[500:]"``: the
examples at those indices of the split, in its order (a quick bits/dim on part of a test set).

Built in, no download: ``ring8``, ``grid25``, ``gmm16`` (Gaussian mixtures with exact densities,
see ``synthetic.MIXTURES``), ``checkerboard``, ``swiss_roll`` (vectors; splits ``train`` of
100,000 and ``test`` of 10,000) and ``digits`` (scikit-learn's 8 x 8 digits; ``train`` 1,500,
``test`` 297). Read from ``data_dir``: the tensorflow-datasets sets (prepared beforehand in the
array_record format, never downloaded) and ``image_folder`` (``data_dir/<split>/[<class>/]``).

Batches: {"x": float32 [B, H, W, C] in [0, 1] or [B, D], "label": int32 [B] (-1 when
unlabelled), "mask": bool [B] (False on padding)}. Training, for example::

    ds = get_dataset("cifar10", split="train", batch_size=128, seed=0, data_dir=...,
                     shuffle=True, repeat=True, random_flip=True)
    it = iter(ds); batch = next(it); state = it.get_state()  # save with the checkpoint
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import NamedTuple

import grain
import numpy as np

from score_sde.datasets.images import DataError, digits, image_folder
from score_sde.datasets.pipeline import Source, batches, check_batching
from score_sde.datasets.scaling import get_data_inverse_scaler, get_data_scaler
from score_sde.datasets.synthetic import SyntheticSource
from score_sde.datasets.tfds import DatasetNotPreparedError, tfds_images

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "batches",
    "dataset_info",
    "get_data_inverse_scaler",
    "get_data_scaler",
    "get_dataset",
    "get_source",
]


def _vectors(name: str, *, split, image_size, channels, data_dir, resample) -> Source:
    del data_dir, resample  # built in, not images
    if image_size is not None or channels is not None:
        raise ValueError(
            f"{name!r} is vector data: pass image_size=None and channels=None "
            f"(config.data.image_size=None, config.data.num_channels=None), got "
            f"image_size={image_size}, channels={channels}."
        )
    return SyntheticSource(name, split)


def _digits(*, split, image_size, channels, data_dir, resample) -> Source:
    del data_dir  # bundled with scikit-learn
    return digits(split, image_size, channels, resample)


Builder = Callable[..., Source]
DATASETS: dict[str, Builder] = {
    "ring8": functools.partial(_vectors, "ring8"),
    "grid25": functools.partial(_vectors, "grid25"),
    "gmm16": functools.partial(_vectors, "gmm16"),
    "checkerboard": functools.partial(_vectors, "checkerboard"),
    "swiss_roll": functools.partial(_vectors, "swiss_roll"),
    "digits": _digits,
    "mnist": functools.partial(tfds_images, "mnist"),
    "fashion_mnist": functools.partial(tfds_images, "fashion_mnist"),
    "cifar10": functools.partial(tfds_images, "cifar10"),
    "svhn": functools.partial(tfds_images, "svhn_cropped"),
    "celeba": functools.partial(tfds_images, "celeb_a", crop=140),  # as Song et al.: 140 px centre
    "lsun_bedroom": functools.partial(tfds_images, "lsun/bedroom"),
    "lsun_church": functools.partial(tfds_images, "lsun/church_outdoor"),
    "image_folder": image_folder,
}


_SLICED = re.compile(r"(?P<split>[^\[\]]+)\[(?P<start>\d*):(?P<stop>\d*)\]")


@dataclasses.dataclass(frozen=True)
class SlicedSource:
    """Examples ``start`` to ``stop`` (exclusive) of ``base``, in its order."""

    base: Source
    start: int
    stop: int

    @property
    def element_shape(self) -> tuple[int, ...]:
        return self.base.element_shape

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    def __len__(self) -> int:
        return self.stop - self.start

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.base.read(np.asarray(indices) + self.start)


def _sliced(source: Source, split: str, start: str, stop: str) -> Source:
    """``source[start:stop]`` with Python's bounds (clipped to the split), never empty."""
    first, end, _ = slice(int(start or 0), int(stop) if stop else None).indices(len(source))
    if end <= first:
        raise ValueError(
            f"split={split!r} selects no example: the split has {len(source)}; use "
            "[start:stop] with start < stop, e.g. test[:1000]."
        )
    return SlicedSource(source, first, end)


class DatasetInfo(NamedTuple):
    shape: tuple[int, ...]  # one example: (H, W, C) or (D,)
    num_examples: int  # in the split
    num_classes: int  # 0 when unlabelled


def get_source(
    name: str,
    *,
    split: str,
    image_size: int | None = None,
    channels: int | None = None,
    data_dir: str | None = None,
    resample: str = "bilinear",
) -> Source:
    """The random-access source of split ``split`` of data set ``name``.

    ``image_size`` / ``channels`` (1 or 3) default to the data set's own; ``resample`` is the
    PIL filter for resizing: "nearest", "bilinear" or "bicubic". ``split`` may be sliced:
    ``"test[:1000]"``, ``"train[500:1500]"`` (non-negative indices, as Python clips them).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(sorted(DATASETS))}.")
    if image_size is not None and (type(image_size) is not int or image_size < 1):
        raise ValueError(f"image_size={image_size!r} must be a positive integer or None.")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels={channels!r} must be 1, 3 or None (the data set's own).")
    sliced = _SLICED.fullmatch(split) if isinstance(split, str) else None
    source = DATASETS[name](
        split=sliced["split"] if sliced else split, image_size=image_size, channels=channels,
        data_dir=data_dir, resample=resample,
    )  # fmt: skip
    return _sliced(source, split, sliced["start"], sliced["stop"]) if sliced else source


def dataset_info(
    name: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    data_dir: str | None = None,
) -> DatasetInfo:
    """(shape of one example, number of examples in ``split``, number of classes)."""
    source = get_source(
        name, split=split, image_size=image_size, channels=channels, data_dir=data_dir
    )
    return DatasetInfo(tuple(source.element_shape), len(source), source.num_classes)


def get_dataset(
    name: str,
    *,
    split: str,
    batch_size: int,
    image_size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    shuffle: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    random_flip: bool = False,
    resample: str = "bilinear",
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = 2,
    prefetch: int = 4,
) -> grain.IterDataset:
    """Batches of ``batch_size`` (per process) from split ``split`` of data set ``name``.

    See ``get_source`` for the data arguments and ``pipeline.batches`` for the others. The
    defaults give one ordered pass with a padded last batch (evaluation); for training pass
    ``shuffle=True, repeat=True``.
    """
    check_batching(batch_size, seed, shard_index, shard_count)  # fail before reading any data
    source = get_source(
        name,
        split=split,
        image_size=image_size,
        channels=channels,
        data_dir=data_dir,
        resample=resample,
    )
    return batches(
        source,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        repeat=repeat,
        drop_remainder=drop_remainder,
        random_flip=random_flip,
        shard_index=shard_index,
        shard_count=shard_count,
        num_threads=num_threads,
        prefetch=prefetch,
    )
