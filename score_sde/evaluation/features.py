"""Inception features of images, as pytorch-fid computes them, jitted and sharded over a mesh.

Images come in the data's own range: uint8 [0, 255], or floats in ``data_range`` ((0, 1) by
default; (-1, 1) for centred data), NHWC of any size with 1 or 3 channels. They are converted
as the reference does: grey replicated to 3 channels, bilinear resize to 299 x 299 (torch's
``F.interpolate(mode="bilinear", align_corners=False)``: half-pixel centres, no antialiasing),
then scaled to [-1, 1].
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from score_sde import sharding
from score_sde.evaluation import weights as weights_lib
from score_sde.evaluation.inception import CLASSES, FEATURES, RESOLUTION

Array = jax.Array
DataRange = tuple[float, float]
BATCH_SIZE = 50  # images per device per call


def preprocess(images: Array, data_range=(0.0, 1.0)) -> Array:
    """[N, H, W, 1 or 3] in the data's range (floats; uint8 is [0, 255]) -> [N, 299, 299, 3]
    float32 in [-1, 1]."""
    if images.dtype == jnp.uint8:
        x = images.astype(jnp.float32) / 255.0
    else:
        lo, hi = (jnp.asarray(v, jnp.float32) for v in data_range)
        x = (images.astype(jnp.float32) - lo) / (hi - lo)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    shape = (x.shape[0], RESOLUTION, RESOLUTION, 3)
    if x.shape != shape:
        x = jax.image.resize(x, shape, "bilinear", antialias=False)
    return 2.0 * x - 1.0


def check_images(images: np.ndarray, data_range: DataRange) -> None:
    """Raise ValueError unless ``images`` are NHWC uint8, or floats inside ``data_range``."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"images of shape {images.shape}: expected NHWC [N, H, W, C] with C = 1 or 3."
        )
    if np.issubdtype(images.dtype, np.integer) and images.dtype != np.uint8:
        raise ValueError(f"images of dtype {images.dtype}: integers must be uint8 [0, 255].")
    if np.issubdtype(images.dtype, np.floating) and images.size:
        lo, hi = data_range
        if not (lo < hi):
            raise ValueError(f"data_range={data_range}: need low < high.")
        a, b = float(np.min(images)), float(np.max(images))
        slack = 1e-3 * (hi - lo)
        if not (np.isfinite(a) and np.isfinite(b)) or a < lo - slack or b > hi + slack:
            raise ValueError(
                f"float images hold values in [{a:.4g}, {b:.4g}], outside data_range="
                f"{data_range}: pass the data's range (e.g. data_range=(-1, 1) for centred "
                "data) or uint8 images."
            )


def pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` [m, ...] completed with zero rows to [n, ...] (one shape per compiled program)."""
    return np.concatenate([a, np.zeros((n - len(a), *a.shape[1:]), a.dtype)])


class Inception:
    """The FID Inception with loaded weights, its state replicated over ``mesh`` and its
    forward pass jitted: ``outputs(images)`` gives pool3 features and, with the canonical
    weights, logits."""

    def __init__(self, graphdef, state, *, has_logits: bool, mesh: jax.sharding.Mesh, path=""):
        self.graphdef, self.has_logits, self.mesh, self.path = graphdef, has_logits, mesh, path
        self.state = jax.device_put(state, sharding.replicated(mesh))
        self.batch_sharding = sharding.batch_sharding(mesh)
        self._forward = jax.jit(self._apply, out_shardings=self.batch_sharding)

    @classmethod
    def load(cls, weights: str | None = None, *, mesh=None) -> Inception:
        """From a converted file (``weights``; default ``weights_lib.find()``), on ``mesh``
        (default: a 1-D mesh over this process's devices). Loaded and compiled once per process,
        file (and its modification time) and mesh."""
        path = os.path.abspath(weights_lib.find() if weights is None else weights)
        if mesh is None:
            mesh = sharding.make_mesh(jax.local_devices())
        stamp = os.path.getmtime(path) if os.path.exists(path) else None
        return _load(path, stamp, mesh)

    def _apply(self, state, images: Array, data_range):
        features, logits = nnx.merge(self.graphdef, state)(preprocess(images, data_range))
        return features, jnp.zeros((images.shape[0], 0)) if logits is None else logits

    def __call__(self, images: Array, data_range: DataRange = (0.0, 1.0)):
        """(features [N, 2048], logits [N, 1008] or [N, 0]) of a batch already on the mesh,
        sharded along its first axis like the inputs (one program for every data range)."""
        lo_hi = jax.device_put(np.asarray(data_range, np.float32), sharding.replicated(self.mesh))
        return self._forward(self.state, images, lo_hi)

    def outputs(
        self,
        images: np.ndarray,
        *,
        data_range: DataRange = (0.0, 1.0),
        batch_size: int | None = None,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(features [N, 2048], logits [N, 1008] or None) of host images, in batches."""
        images = np.asarray(images)
        check_images(images, data_range)
        n, devices = len(images), self.mesh.devices.size
        # An equal share per device, and no bigger than the images need (a job's batches all
        # have one size: one compiled program).
        batch = min(batch_size or BATCH_SIZE * devices, max(n, 1))
        batch = math.ceil(batch / devices) * devices
        feats, logits = [], []
        with tqdm(total=n, unit="img", disable=not progress, desc="Inception") as bar:
            for start in range(0, n, batch):
                chunk = images[start : start + batch]
                padded = pad_rows(chunk, batch)
                f, lg = self(jax.device_put(padded, self.batch_sharding), data_range)
                feats.append(np.asarray(f)[: len(chunk)])
                logits.append(np.asarray(lg)[: len(chunk)])
                bar.update(len(chunk))
        if not feats:
            logits = [np.zeros((0, CLASSES), np.float32)]
            feats = [np.zeros((0, FEATURES), np.float32)]
        return np.concatenate(feats), np.concatenate(logits) if self.has_logits else None


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: float | None, mesh) -> Inception:
    del stamp  # part of the cache key: a file converted again is loaded again
    arrays, meta = weights_lib.load(path)
    logits = bool(meta.get("logits"))
    graphdef, state = weights_lib.to_nnx(arrays, logits, path)
    return Inception(graphdef, state, has_logits=logits, mesh=mesh, path=path)


def inception_features(
    images: np.ndarray,
    weights: str | None = None,
    *,
    data_range: DataRange = (0.0, 1.0),
    batch_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """The 2048-d pool3 features [N, 2048] (float32) of ``images``: uint8 NHWC of any size with 1
    or 3 channels, or floats in ``data_range`` ((0, 1) default, (-1, 1) for centred data).
    ``weights``: a converted file (``score-sde-inception``); None finds it in the cache."""
    return Inception.load(weights).outputs(
        images, data_range=data_range, batch_size=batch_size, progress=progress
    )[0]
