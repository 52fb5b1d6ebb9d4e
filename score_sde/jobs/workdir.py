"""A workdir's layout, defined here and nowhere else::

checkpoints/      orbax checkpoints with the run's config (train writes; eval, sample read)
config.json       the resolved config of the latest training run
damaged_checkpoints/  checkpoints that failed to restore or verify, moved aside by a resume
train.lock        held by the training job (its host and pid): one trainer per workdir
metrics.jsonl     training scalars, one JSON object per logged step
tensorboard/      training event files (``tensorboard --logdir <workdir>``)
samples/          train_<step>.png: training's snapshot grids; sample_<step>.png, .npz and
                  _metrics.json: --mode sample's
eval/             --mode eval's report.json, tensorboard/, samples_<step>.png and .npz of each
                  checkpoint, fid_partial_<step>.npz
"""

from __future__ import annotations

import dataclasses
import os


def _under(*parts: str) -> property:
    """The path ``root/parts...`` as a read-only attribute."""
    return property(lambda self: os.path.join(self.root, *parts))


@dataclasses.dataclass(frozen=True)
class Workdir:
    """The paths of the workdir at ``root`` (made absolute)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.abspath(self.root))

    checkpoints = _under("checkpoints")
    config = _under("config.json")
    damaged = _under("damaged_checkpoints")
    lock = _under("train.lock")
    metrics = _under("metrics.jsonl")
    tensorboard = _under("tensorboard")
    samples = _under("samples")
    eval = _under("eval")
    report = _under("eval", "report.json")
    eval_tensorboard = _under("eval", "tensorboard")
