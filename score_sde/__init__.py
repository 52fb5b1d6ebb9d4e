"""score_sde: score-based generative models through SDEs, in JAX."""

import os

__version__ = "0.1.0"

# Before JAX creates its CPU client: jaxlib 0.10's concurrency-optimised CPU scheduler can
# deadlock (docs/notes.md). A value the user set in XLA_FLAGS wins.
_CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _CPU_SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} {_CPU_SCHEDULER_FLAG}=false".strip()
    )
