"""tensorflow-datasets image sets, read through ``tfds.data_source`` (array_record, no TensorFlow).

Nothing is downloaded at run time: a data set must have been prepared under ``data_dir`` in the
array_record format beforehand (see ``DatasetNotPreparedError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from score_sde.datasets.images import check_resample, resize_crop, to_channels


class DatasetNotPreparedError(FileNotFoundError):
    """A tfds data set is not prepared under data_dir (and will not be downloaded)."""


def _not_prepared_message(name: str, split: str, data_path: str, root: str) -> str:
    return (
        f"tfds data set {name!r} (split {split!r}) is not prepared under data_dir={root} "
        f"(looked in {data_path}); nothing is downloaded at run time. Prepare it once on a "
        f"machine with network access (pip install 'score-sde[prepare]' && tfds build {name} "
        f"--data_dir={root} --file_format=array_record), then copy the folder {root} (or only "
        f"its {name.split(':')[0]}/ part, keeping that path) to this machine and pass it as "
        "data_dir (config.data.data_dir)."
    )


def open_tfds(name: str, split: str, data_dir: str | None) -> Sequence[dict[str, Any]]:
    """``tfds.data_source(name, split, data_dir, download=False)``, failing at once with
    ``DatasetNotPreparedError`` (and how to prepare it) when the data are not there."""
    folder = os.path.join(data_dir, name.split(":")[0]) if data_dir else None
    if folder and not os.path.isdir(folder):  # say so before tfds logs its own warnings
        raise DatasetNotPreparedError(_not_prepared_message(name, split, folder, data_dir))
    import tensorflow_datasets as tfds  # imported lazily: it takes ~1 s

    with _quiet_tfds_warnings():
        try:
            return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as err:
            builder = tfds.builder(name, data_dir=data_dir)
            if builder.is_prepared():
                raise  # e.g. a bad split name, or prepared as tfrecord: tfds's message says so
            data_path, data_root = str(builder.data_dir), str(builder.data_dir_root)
            raise DatasetNotPreparedError(
                _not_prepared_message(name, split, data_path, data_root)
            ) from err


@contextlib.contextmanager
def _quiet_tfds_warnings():
    """tfds logs warnings about the folders it probes (a variant without dataset_info.json):
    the error raised after them says what is missing and how to prepare it."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A tfds image split: uint8 images [B, S, S, C] and int32 labels (-1 when unlabelled)."""

    data: Sequence[dict[str, Any]]
    image_size: int
    channels: int
    num_classes: int
    resample: str
    crop: int | None = None

    @property
    def element_shape(self) -> tuple[int, ...]:
        return (self.image_size, self.image_size, self.channels)

    def __len__(self) -> int:
        return len(self.data)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        examples = [self.data[int(i)] for i in indices]
        images = [
            resize_crop(e["image"], self.image_size, self.resample, self.crop) for e in examples
        ]
        images = to_channels(np.stack(images), self.channels)
        labels = np.array([e.get("label", -1) for e in examples], np.int32)
        return images, labels


def tfds_images(
    tfds_name: str,
    split: str,
    data_dir: str | None,
    image_size: int | None = None,
    channels: int | None = None,
    resample: str = "bilinear",
    crop: int | None = None,
) -> TfdsSource:
    """The tfds image data set ``tfds_name`` (features ``image`` and optionally ``label``),
    centre-cropped to ``crop`` (if given) and resized to ``image_size`` (default: native)."""
    check_resample(resample)
    data = open_tfds(tfds_name, split, data_dir)
    features = data.dataset_info.features
    height, width, native_channels = features["image"].shape
    native = crop or (height if height == width else None)
    if image_size is None and native is None:
        raise ValueError(
            f"tfds data set {tfds_name!r} has images of shape {(height, width)}: pass image_size "
            "(config.data.image_size) to resize and centre-crop them to a square."
        )
    num_classes = features["label"].num_classes if "label" in features else 0
    size = image_size or native
    return TfdsSource(data, size, channels or native_channels, num_classes, resample, crop)
