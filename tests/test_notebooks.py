"""The notebooks are jupytext pairs: notebooks/x.py (percent format, what is reviewed and
linted) and notebooks/x.ipynb (what Jupyter opens, stored without outputs). pytest runs the
.ipynb files themselves through nbmake (``--nbmake`` in pyproject's addopts); this checks that
each pair says the same thing."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SCRIPTS = sorted(NOTEBOOKS.glob("*.py"))


def test_every_notebook_has_its_script():
    assert SCRIPTS, f"no notebooks in {NOTEBOOKS}"
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_pair_is_in_sync_and_stored_without_outputs(script):
    stored = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    paired = jupytext.read(script)
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
    assert cells(stored) == cells(paired), (
        f"{script.name} and its .ipynb differ: run `jupytext --sync {script}`"
    )
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{script.with_suffix('.ipynb').name} stores outputs: clear them before committing"
            )
