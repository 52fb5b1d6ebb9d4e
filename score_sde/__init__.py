"""score_sde: score-based generative models through SDEs, in JAX."""

import os

__version__ = "0.1.0"

# jaxlib 0.10.x's CPU runtime can deadlock (every thread idle, the result never ready) on
# programs with several independent large ops when its concurrency-optimised scheduler is on;
# seen here on a 2-core machine in about 4 runs in 5 of one loss test. Turning the scheduler off
# avoids it and costs little; the flag only touches the CPU backend. It must be set before JAX
# creates its CPU client, so import score_sde before running any JAX computation. A value the
# user set in XLA_FLAGS wins.
_CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _CPU_SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} {_CPU_SCHEDULER_FLAG}=false".strip()
    )
