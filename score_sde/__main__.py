"""``python -m score_sde``: the command line (``score_sde.jobs.main``), as the ``score-sde``
console script."""

from score_sde.jobs.main import run

run()
