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
# # Controllable generation on digits: inpainting, SDEdit, guidance
#
# `notebooks/control.py` shows each control of `score_sde.control` with exact scores; here they
# run on trained digits models:
#
# - a class-conditional score model trained with label dropout (`configs/digits_cond.py`), so
#   one network gives s(x, t, y) and, at the null label, the unconditional s(x, t);
# - a noise-conditional classifier p_t(y | x) (`configs/digits_classifier.py`);
# - the unconditional model of `configs/digits.py`, if you trained it.
#
# The models come from the workdirs the README's commands make (`runs/digits_cond`,
# `runs/digits_classifier`, `runs/digits`) when they exist; otherwise they are trained here
# (with the real configs: about 10 minutes each on a 2-core CPU). Under pytest
# (`SCORE_SDE_QUICK=1`) small versions train for 200 steps on the digits at their native 8 x 8:
# their samples are blobs more than digits, but every effect checked below already shows.
#
# An independent judge scores the samples: a logistic regression on the clean training digits
# (scikit-learn), which has never seen a sample. Besides its accuracy on the class asked for,
# the mean log-probability it gives that class: a finer measure when the samples are blobs.

# %%
import os
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression

# configs/ is not part of the installed package: put the repository root on the path.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "configs" / "digits.py").exists())
sys.path.insert(0, str(ROOT))

from configs import digits_classifier, digits_cond  # noqa: E402
from score_sde import control, datasets, sampling  # noqa: E402
from score_sde.jobs.evaluator import load_model  # noqa: E402
from score_sde.jobs.main import run_job  # noqa: E402
from score_sde.jobs.runlog import make_grid  # noqa: E402

# %% [markdown]
# ## Parameters

# %%
QUICK = os.environ.get("SCORE_SDE_QUICK") == "1"
RUNS = ROOT / "runs"  # where the README's commands put their workdirs
N = 20 if QUICK else 50  # images per experiment (two per class in QUICK)
N_STEPS = 20 if QUICK else 100  # sampler steps


def tiny(config, ch_mult):
    """The QUICK size of a digits config: 8 x 8 digits, a small U-Net, 200 steps."""
    config.data.image_size = 8
    t = config.training
    t.n_iters, t.batch_size, t.n_jitted_steps, t.log_freq = 200, 32, 10, 10
    t.snapshot_freq = t.snapshot_freq_for_preemption = t.eval_freq = 200
    t.snapshot_sampling = False
    config.model.nf, config.model.ch_mult, config.model.attn_resolutions = 16, ch_mult, ()
    config.model.resblock_type = "ddpm"
    config.optim.warmup, config.optim.lr = 10, 2e-3
    return config


def workdir_of(name, module, quick_ch_mult):
    """runs/<name> if it has checkpoints (and not QUICK), else a run trained here now."""
    existing = RUNS / name
    if not QUICK and (existing / "checkpoints").exists():
        return str(existing)
    workdir = tempfile.mkdtemp(prefix=f"{name}_")
    config = tiny(module.get_config(), quick_ch_mult) if QUICK else module.get_config()
    print(f"training {name} in {workdir} ...")
    status = run_job(config, workdir, mode="train")
    assert status == 0, f"{name}: training stopped with exit code {status}"
    return workdir


def load(workdir):
    """The latest checkpoint's model (EMA parameters), with the config it was trained with."""
    model = load_model(workdir)
    print(f"{workdir}: step {model.step}, {model.exp.param_count:,} parameters")
    return model


# %%
# Under QUICK, one resolution for the score model (its compile is what costs) and two for the
# classifier (with one, its guidance barely moves the judge).
cond = load(workdir_of("digits_cond", digits_cond, quick_ch_mult=(1,)))

# %%
clf = load(workdir_of("digits_classifier", digits_classifier, quick_ch_mult=(1, 2)))

# %%
NULL = cond.exp.cfg.model.num_classes  # the label-dropout label: "no label"
conditional = cond.score_fn()  # s(x, t, y)
if not QUICK and (RUNS / "digits" / "checkpoints").exists():
    unconditional = load(str(RUNS / "digits")).score_fn()
else:  # the conditional model at the null label
    unconditional = cond.score_fn(jnp.full(N, NULL))
logits_fn = clf.exp.logits_fn(clf.params, clf.rest)  # p_t(y | x) logits
sde, exp = cond.exp.sde, cond.exp
shape = (N, *exp.data_shape)
size = exp.data_shape[0]  # 16, or 8 under QUICK

# The test digits (in [0, 1]) and the judge, fitted on the training digits.
source = lambda split: datasets.get_source("digits", split=split, image_size=size, channels=1)
train_x, train_y = source("train").read(np.arange(1500))
judge = LogisticRegression(max_iter=2000).fit(train_x.reshape(1500, -1) / 255, train_y)
test_x, test_y = source("test").read(np.arange(N))
test_x = test_x.astype(np.float32) / 255
print(f"judge accuracy on {N} test digits: {judge.score(test_x.reshape(N, -1), test_y):.2f}")


def show(rows, title=None):
    """Image rows {name: images [n, 16, 16, 1] in [0, 1]}, one grid per row."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(N * 0.45, 0.75 * len(rows) + 0.3))
    for ax, (name, x) in zip(np.atleast_1d(axes), rows.items(), strict=True):
        ax.imshow(make_grid(np.clip(x, 0, 1), ncol=len(x))[..., 0], cmap="gray")
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    plt.tight_layout()


to_images = lambda x: np.asarray(exp.inverse_scaler(x))  # model space [-1, 1] -> [0, 1]

# %% [markdown]
# ## Inpainting
#
# Keep the left half of each test digit and complete the right half (Song et al. 2021, App. I):
# `control.inpainting_score` re-noises the known pixels from the data at every evaluation and
# gives them the exact score of their noised marginal, so the final denoising step
# (E[x0 | x_eps], Tweedie) returns them exactly. Data and mask are in the model's space.

# %%
mask = np.zeros(exp.data_shape, np.float32)
mask[:, : size // 2] = 1.0  # 1: known
data = exp.scaler(jnp.asarray(test_x))
inpaint = control.inpainting_score(unconditional, sde, data, mask, jax.random.key(1))
x, nfe = sampling.sample(
    jax.random.key(2), sde, inpaint, shape, method="euler_maruyama", n_steps=N_STEPS
)
inpainted = to_images(x)
show(
    {"data": test_x, "known": test_x * mask + 0.5 * (1 - mask), "inpainted": inpainted},
    f"inpainting the right half, euler_maruyama, {int(nfe)} NFE",
)
kept = float(np.abs(inpainted - test_x)[..., : size // 2, :].max())
print(f"known pixels: max |inpainted - data| = {kept:.2e}")
assert kept < 1e-3

# %% [markdown]
# ## Colorization
#
# `control.colorization_score(score_fn, sde, gray, rng)` is inpainting in an orthogonal colour
# basis whose first axis is the grey level: it turns a grey image into RGB images whose channel
# mean is that grey. It needs a model of RGB images (e.g. `configs/vp/cifar10_*`); the digits
# are grayscale (one channel), so there is nothing to colourise here.

# %% [markdown]
# ## SDEdit
#
# Noise the test digits to time t0 along the forward SDE, then solve back
# (`control.sdedit`, DDIM with eta = 1 here): a small t0 keeps the input, t0 = T forgets it and
# gives a plain sample of the model.

# %%
edits, distance = {"input": test_x}, {}
for t0 in (0.1, 0.3, 0.6, 1.0):
    x, _ = control.sdedit(
        jax.random.key(3), sde, unconditional, data, t0=t0, n_steps=N_STEPS, eta=1.0
    )
    edits[f"t0 = {t0}"] = to_images(x)
    distance[t0] = float(np.abs(np.clip(edits[f"t0 = {t0}"], 0, 1) - test_x).mean())
    print(f"t0 = {t0}: mean |edit - input| per pixel {distance[t0]:.3f}")
show(edits, "SDEdit (DDIM, eta = 1)")
# Measured under QUICK: 0.08, 0.20, 0.25, 0.25 (t0 = 0.6 has already forgotten most of the input);
# at the real settings (2026-12-03): 0.037, 0.085, 0.188, 0.207.
assert distance[0.1] < distance[0.3] < distance[1.0] and distance[0.1] < 0.5 * distance[1.0]

# %% [markdown]
# ## Classifier-free guidance
#
# Ask for the classes in turn (y = 0, 1, ..., 9, 0, ...). `control.classifier_free_guidance`
# mixes s(x, t, null) + scale (s(x, t, y) - s(x, t, null)) in one batched call: scale 0 is the
# unconditional sampler, 1 the conditional one, above 1 sharper. The scale is an array, not a
# constant, so every scale reuses one compiled sampler.

# %%
y = np.arange(N) % 10
sample = lambda score_fn: to_images(
    sampling.sample(
        jax.random.key(4), sde, score_fn, shape, method="euler_maruyama", n_steps=N_STEPS
    )[0]
)


def judged(x):
    """(accuracy, mean log-probability) of the judge for the classes y asked for."""
    x = np.clip(x, 0, 1).reshape(N, -1)
    logp = np.log(judge.predict_proba(x)[np.arange(N), y] + 1e-12)
    return float(np.mean(judge.predict(x) == y)), float(np.mean(logp))


cfg_samples, cfg_judged = {}, {}
for scale in (0.0, 1.0, 3.0):
    guided = control.classifier_free_guidance(conditional, jnp.asarray(y), NULL, scale)
    cfg_samples[f"scale {scale:g}"] = x = sample(guided)
    cfg_judged[scale] = judged(x)
    print(f"scale {scale}: judged as asked {cfg_judged[scale][0]:.2f}, "
          f"mean log p(y | x) {cfg_judged[scale][1]:.2f}")  # fmt: skip
show(cfg_samples, "classifier-free guidance: columns ask for 0, 1, ..., 9")
# Measured under QUICK: log p -3.72 (scale 0), -3.51 (1), -3.18 (3); accuracy 0.05, 0.15, 0.20.
# At the real settings: log p -6.80, -0.07, -0.01; accuracy 0.10, 0.96, 1.00.
assert cfg_judged[3.0][1] > cfg_judged[0.0][1] + 0.3, cfg_judged
assert cfg_judged[3.0][0] > cfg_judged[0.0][0], cfg_judged

# %% [markdown]
# ## Classifier guidance
#
# `control.classifier_guidance(score_fn, logits_fn, y, scale)` adds scale * grad_x log p_t(y | x)
# of the noise-conditional classifier to the unconditional score (Song et al. 2021, Eq. 14;
# Dhariwal & Nichol 2021). `Experiment.logits_fn(params, rest)` is the classifier's
# `logits_fn(x, t)`.

# %%
cg_samples, cg_judged = {}, {}
for scale in (0.0, 2.0, 5.0):
    guided = control.classifier_guidance(unconditional, logits_fn, jnp.asarray(y), scale)
    cg_samples[f"scale {scale:g}"] = x = sample(guided)
    cg_judged[scale] = judged(x)
    print(f"scale {scale}: judged as asked {cg_judged[scale][0]:.2f}, "
          f"mean log p(y | x) {cg_judged[scale][1]:.2f}")  # fmt: skip
show(cg_samples, "classifier guidance: columns ask for 0, 1, ..., 9")
# Measured under QUICK: log p -3.72 (scale 0), -1.49 (2), -0.79 (5); accuracy 0.05, 0.45, 0.75.
# At the real settings: log p -8.35, -0.16, -0.05; accuracy 0.06, 0.94, 1.00.
assert max(cg_judged[2.0][1], cg_judged[5.0][1]) > cg_judged[0.0][1] + 0.3, cg_judged
assert cg_judged[5.0][0] > cg_judged[0.0][0] + 0.2, cg_judged
