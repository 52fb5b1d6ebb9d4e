"""Image sources that need no download: scikit-learn's 8 x 8 digits and folders of image files.

Every image source returns uint8 images [B, H, W, C] (0..255 levels, so uniform dequantization
applies) and int32 labels [B], -1 when unlabelled. Resizing is PIL's antialiased resampling:
the shorter side goes to ``image_size``, then the centre square is cropped.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import numpy as np
from PIL import Image

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DIGITS_TRAIN_SIZE = 1500  # of 1,797; the other 297 are the test split
_DIGITS_SPLIT_SEED = 0


class DataError(ValueError):
    """Data that cannot be used as configured (a missing folder, no or unreadable files): a
    user error, told with the path and the fix."""


def check_resample(resample: str) -> None:
    if resample not in RESAMPLE:
        raise ValueError(f"resample={resample!r} is unknown; valid: {sorted(RESAMPLE)}.")


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [..., C] -> [..., channels]: grey is replicated to RGB, RGB goes to luma (BT.601)."""
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.round(luma)[..., None].astype(np.uint8)
    raise ValueError(f"channels={channels} is not supported for {have}-channel images; use 1 or 3.")


def resize_crop(
    image: np.ndarray, size: int, resample: str = "bilinear", crop: int | None = None
) -> np.ndarray:
    """uint8 [H, W, C] -> [size, size, C]: centre-crop to ``crop`` (if given), scale the shorter
    side to ``size``, centre-crop the square."""
    if crop is not None:
        top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        image = image[top : top + crop, left : left + crop]
    h, w, c = image.shape
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    pil = Image.fromarray(image[..., 0] if c == 1 else image)
    out = np.asarray(pil.resize((new_w, new_h), RESAMPLE[resample]))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return out[top : top + size, left : left + size].reshape(size, size, c)


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """Examples held in memory: uint8 images [N, H, W, C] or float32 vectors [N, D]; labels [N]."""

    x: np.ndarray
    labels: np.ndarray
    num_classes: int

    @property
    def element_shape(self) -> tuple[int, ...]:
        return self.x.shape[1:]

    def __len__(self) -> int:
        return len(self.x)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[indices], self.labels[indices]


@functools.cache
def _digits_arrays(image_size: int, channels: int, resample: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    # 17 grey levels 0..16 -> 0..255, then resized as 0..255-level images.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    images = np.stack([resize_crop(im, image_size, resample) for im in images])
    images = to_channels(images, channels)
    images.flags.writeable = False
    return images, digits.target.astype(np.int32)


def digits(
    split: str,
    image_size: int | None = None,
    channels: int | None = None,
    resample: str = "bilinear",
) -> ArraySource:
    """scikit-learn's 1,797 handwritten digits (10 classes), 8 x 8 px natively.

    Splits by a fixed permutation: ``train`` (1,500 images) and ``test`` (297).
    """
    check_resample(resample)
    images, labels = _digits_arrays(image_size or 8, channels or 1, resample)
    perm = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(images))
    splits = {"train": perm[:DIGITS_TRAIN_SIZE], "test": perm[DIGITS_TRAIN_SIZE:]}
    if split not in splits:
        raise ValueError(f"split={split!r} is not a split of 'digits'; valid: {sorted(splits)}.")
    keep = np.sort(splits[split])
    return ArraySource(images[keep], labels[keep], num_classes=10)


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """Image files under ``data_dir/split``: either directly (unlabelled, label -1) or in one
    subfolder per class (labels = index of the subfolder name in sorted order)."""

    files: tuple[pathlib.Path, ...]
    labels: np.ndarray  # int32 [N]
    num_classes: int
    image_size: int
    channels: int
    resample: str

    @property
    def element_shape(self) -> tuple[int, ...]:
        return (self.image_size, self.image_size, self.channels)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: pathlib.Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                im = np.asarray(im.convert("RGB" if self.channels == 3 else "L"))
        except (OSError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated files
            raise DataError(
                f"{path}: not an image PIL can read ({err}); remove or replace the file."
            ) from None
        im = im.reshape(*im.shape[:2], self.channels)
        return resize_crop(im, self.image_size, self.resample)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.stack([self._load(self.files[i]) for i in indices])
        return images, self.labels[indices]


def image_folder(
    split: str,
    data_dir: str | None,
    image_size: int | None,
    channels: int | None = None,
    resample: str = "bilinear",
) -> FolderSource:
    """Images under ``data_dir/<split>/`` (optionally ``data_dir/<split>/<class>/``), resized
    and centre-cropped to ``image_size``; RGB unless ``channels=1``."""
    check_resample(resample)
    if data_dir is None:
        raise DataError(
            "image_folder needs data_dir=<root> (config.data.data_dir), with images "
            "in <root>/<split>/ or <root>/<split>/<class>/."
        )
    if image_size is None:
        raise DataError(
            "image_folder needs image_size (config.data.image_size): files may differ in size."
        )
    root = pathlib.Path(data_dir) / split
    if not root.is_dir():
        found = sorted(p.name for p in pathlib.Path(data_dir).glob("*") if p.is_dir())
        raise DataError(
            f"no folder {root} for split={split!r}; splits found under "
            f"{data_dir}: {found or 'none'}."
        )
    is_image = lambda p: p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p for p in root.iterdir() if is_image(p))
    if classes and loose:
        raise DataError(
            f"{root} holds both image files and class subfolders {classes}; "
            "put every image in a class subfolder, or use no subfolders."
        )
    if classes:
        pairs = [
            (p, k)
            for k, c in enumerate(classes)
            for p in sorted((root / c).rglob("*"))
            if is_image(p)
        ]
    else:
        pairs = [(p, -1) for p in loose]
    if not pairs:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}.")
    files, labels = zip(*pairs, strict=True)
    labels = np.array(labels, np.int32)
    return FolderSource(files, labels, len(classes), image_size, channels or 3, resample)
