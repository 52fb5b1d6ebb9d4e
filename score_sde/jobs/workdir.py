"""A workdir's layout, defined here and nowhere else::

checkpoints/      orbax checkpoints with the run's config (train writes; eval, sample read)
metrics.jsonl     training scalars, one JSON object per logged step
tensorboard/      training event files (``tensorboard --logdir <workdir>``)
samples/          training snapshot grids; --mode sample's .png, .npz and _metrics.json
eval/             report.json, tensorboard/, each checkpoint's samples, fid_partial_<step>.npz
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Workdir:
    """The paths of the workdir at ``root`` (made absolute)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.abspath(self.root))

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.root, "checkpoints")

    @property
    def metrics(self) -> str:
        return os.path.join(self.root, "metrics.jsonl")

    @property
    def tensorboard(self) -> str:
        return os.path.join(self.root, "tensorboard")

    @property
    def samples(self) -> str:
        return os.path.join(self.root, "samples")

    @property
    def eval(self) -> str:
        return os.path.join(self.root, "eval")

    @property
    def report(self) -> str:
        return os.path.join(self.eval, "report.json")

    @property
    def eval_tensorboard(self) -> str:
        return os.path.join(self.eval, "tensorboard")
