"""For every test, the notebooks' kernels and the CLI's subprocesses included (they start with
this process's environment): ``SCORE_SDE_QUICK=1`` makes each notebook run its CI-sized settings
(about two minutes on 2 cores) instead of the real ones a user gets in Jupyter, and XLA's compiled
programs are kept in one folder on disk that all of them share, since the job tests, the CLI runs
and the notebooks build the same programs (models, samplers, the Inception) again and again."""

import os
import tempfile

os.environ.setdefault("SCORE_SDE_QUICK", "1")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "score_sde_tests_jax_cache")
)
# JAX's default: only programs slower than 1 s to compile are written (the aborts once blamed on
# writing every one were the workers' memory mappings running out: tests/conftest.py).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1.0")
