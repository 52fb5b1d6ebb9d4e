"""For every test, the notebooks' kernels included (nbmake starts them with this process's
environment): ``SCORE_SDE_QUICK=1`` makes each notebook run its CI-sized settings (about two
minutes on 2 cores) instead of the real ones a user gets in Jupyter."""

import os

os.environ.setdefault("SCORE_SDE_QUICK", "1")
