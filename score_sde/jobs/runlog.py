"""Run logging: tensorboardX event files, ``metrics.jsonl``, a tqdm progress bar and PNG grids.

Only process 0 writes (``enabled=False`` elsewhere turns every method into a no-op), so a
multi-host run leaves one set of files, where ``workdir.Workdir`` puts them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np
from PIL import Image

from score_sde.jobs.workdir import Workdir


def make_grid(images: np.ndarray, ncol: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile images [N, H, W, C] with values in [0, 1] into one uint8 image [rows·H', cols·W', C].

    ``ncol`` defaults to ceil(sqrt(N)); cells are separated by ``padding`` white pixels.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"make_grid takes images [N, H, W, C], got shape {images.shape}.")
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((nrow * (h + padding) + padding, ncol * (w + padding) + padding, c), np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = img
    return np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)


MIN_CELL = 48  # pixels: smaller images are enlarged (nearest neighbour) in PNG grids


def save_image_grid(path: str, images: np.ndarray, ncol: int | None = None) -> str:
    """Write images [N, H, W, C] in [0, 1] as one PNG grid at ``path``; returns the path.
    Images smaller than ``MIN_CELL`` pixels are enlarged by an integer factor, so that a grid of
    16x16 digits can be read."""
    images = np.asarray(images)
    scale = max(1, math.ceil(MIN_CELL / max(images.shape[1:3])))
    grid = make_grid(images.repeat(scale, axis=1).repeat(scale, axis=2), ncol)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def save_scatter(path: str, samples: np.ndarray, reference: np.ndarray | None = None) -> str:
    """Write a scatter plot of the first two coordinates of vectors [N, D] (with ``reference``
    points in grey behind them) as a PNG at ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = np.asarray(samples).reshape(len(samples), -1)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if reference is not None:
        reference = np.asarray(reference).reshape(len(reference), -1)
        ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.75", label="data")
    y = samples[:, 1] if samples.shape[1] > 1 else np.zeros(len(samples))
    ax.scatter(samples[:, 0], y, s=2, c="tab:blue", label="samples")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=4)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def save_samples_png(path: str, samples: np.ndarray, reference: np.ndarray | None = None) -> str:
    """Images [N, H, W, C] in [0, 1] become a grid; vectors [N, D] a scatter plot."""
    if np.ndim(samples) == 4:
        return save_image_grid(path, samples)
    return save_scatter(path, samples, reference)


def truncate_jsonl(path: str, max_step: int) -> None:
    """Drop the lines of ``path`` logged after ``max_step`` (a resumed run logs them again)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if _step(line) <= max_step]
    with open(path, "w") as f:
        f.writelines(lines)


def _step(line: str) -> float:
    """The step of a metrics.jsonl line; inf for a blank or partial one (a full disk or a kill
    can cut the last line short)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def summary_writer() -> type:
    """tensorboardX's ``SummaryWriter``, imported without torch: tensorboardX imports torch
    when it is installed (2-3 s per job process) only to accept torch tensors, which we never
    pass. A ``None`` in ``sys.modules`` makes that ``import torch`` fail for the moment."""
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
        try:
            import tensorboardX  # noqa: F401
        finally:
            del sys.modules["torch"]
    from tensorboardX import SummaryWriter

    return SummaryWriter


class RunLog:
    """Scalars to tensorboard and ``metrics.jsonl``, a progress bar, and sample grids.

    ``initial_step`` is where a (resumed) run starts: logs after it from an earlier attempt
    are dropped, so a resumed run's files match an uninterrupted run's.
    """

    def __init__(
        self,
        workdir: Workdir,
        *,
        total_steps: int,
        initial_step: int = 0,
        enabled: bool = True,
        progress: bool = True,
    ):
        self.workdir = workdir
        self.enabled = enabled
        self._writer = self._bar = None
        if not enabled:
            return
        os.makedirs(workdir.root, exist_ok=True)
        self.jsonl_path = workdir.metrics
        truncate_jsonl(self.jsonl_path, initial_step)
        self._writer = summary_writer()(workdir.tensorboard, purge_step=initial_step or None)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True
            )

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log scalar ``metrics`` at ``step`` to tensorboard and one line of metrics.jsonl."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps({"step": int(step), **values}) + "\n")

    def progress(self, step: int, **postfix: float) -> None:
        """Move the progress bar to ``step`` (it shows steps/s and the ETA) with ``postfix``."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def samples(self, step: int, name: str, samples: np.ndarray, reference=None) -> str | None:
        """Write ``samples`` as ``samples/<name>_<step>.png`` (and to tensorboard if images)."""
        if not self.enabled:
            return None
        path = os.path.join(self.workdir.samples, f"{name}_{step}.png")
        save_samples_png(path, samples, reference)
        if np.ndim(samples) == 4:
            self._writer.add_image(name, make_grid(samples), step, dataformats="HWC")
        return path

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()


class Announced:
    """``fn``, whose first call (where XLA compiles it: minutes for a U-Net on a CPU) is
    announced through ``write`` before, and timed after."""

    def __init__(self, fn: Callable, what: str, write: Callable[[str], None]):
        self.fn, self.what, self.write, self.first = fn, what, write, True

    def __call__(self, *args, **kwargs):
        if not self.first:
            return self.fn(*args, **kwargs)
        self.write(f"Compiling {self.what} (first call; cached on disk for later runs) ...")
        started = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.first = False
        self.write(f"Compiled {self.what} in {time.perf_counter() - started:.1f} s.")
        return out


def note(message: str) -> None:
    """A line on process 0, printed above any progress bar."""
    if jax.process_index() == 0:
        from tqdm.auto import tqdm

        tqdm.write(message)


def say(*args, **kwargs) -> None:
    """``print`` on process 0 only: every process runs the same job, one reports it."""
    if jax.process_index() == 0:
        print(*args, flush=True, **kwargs)


def write_atomically(path: str, write, suffix: str = ".tmp") -> None:
    """``write(tmp)`` a file beside ``path``, then rename it: a reader never sees half a file.
    ``suffix`` ends the temporary name (``np.savez`` appends ".npz" to any other)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write(path + suffix)
    os.replace(path + suffix, path)


def write_json(path: str, value: dict) -> None:
    """Write a JSON report atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)

    write_atomically(path, write)


def read_report(workdir: Workdir) -> dict:
    """The eval report of ``workdir`` so far ({"checkpoints": {}} before the first)."""
    if not os.path.exists(workdir.report):
        return {"checkpoints": {}}
    with open(workdir.report) as f:
        return json.load(f)


class EvalLog:
    """An eval job's ``report.json`` ({"checkpoints": {step: result}, "latest": ...}) and its
    TensorBoard scalars, under ``<workdir>/eval``; process 0 writes."""

    def __init__(self, workdir: Workdir):
        self.workdir, self.out_dir = workdir, workdir.eval
        self.report = read_report(workdir)
        os.makedirs(self.out_dir, exist_ok=True)
        self.done = self.report["checkpoints"]
        self._writer = None
        if jax.process_index() == 0:
            self._writer = summary_writer()(workdir.eval_tensorboard)

    def add(self, step: int, result: dict) -> None:
        self.done[str(step)] = result
        self.report["latest"] = {"step": step, **result}
        if self._writer is None:
            return
        write_json(self.workdir.report, self.report)
        for key, value in result.items():
            if isinstance(value, float | int) and not isinstance(value, bool):
                self._writer.add_scalar(f"eval/{key}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
