"""odeint.solve: each example of a batch integrated on its own adaptive steps in lockstep,
its PerExample rows bound to it, the trajectory saved in either direction, and the NFE
counted for the batch."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import odeint

pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


@pytest.mark.parametrize("t0,t1", [(0.0, 2.0), (2.0, 0.5)])
def test_odeint_solve_saves_a_pytree_in_both_directions(t0, t1):
    """dy/dt = -y, dI/dt = y: y_t = y0 e^{-(t - t0)}, I_t = y0 (1 - e^{-(t - t0)})."""
    y0 = jnp.asarray([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])
    state0 = (y0, jnp.zeros(3))

    def field(t, state, args):
        return -state[0], jnp.sum(state[0])

    save_at = (1.0, t1, t0, 1.5)
    kw = dict(rtol=1e-10, atol=1e-10)
    end_plain, nfe_plain, none = odeint.solve(field, state0, t0, t1, **kw)
    chex.assert_shape(none, [(0, 3, 2), (0, 3)])
    end, nfe, (ys, integrals) = odeint.solve(field, state0, t0, t1, save_at=save_at, **kw)
    chex.assert_shape([ys, integrals], [(4, 3, 2), (4, 3)])
    chex.assert_trees_all_close(end, end_plain, rtol=1e-13)  # the same steps; XLA may round
    assert int(nfe) == int(nfe_plain)
    decay = jnp.exp(-(jnp.asarray(save_at) - t0))
    np.testing.assert_allclose(ys, decay[:, None, None] * y0, rtol=1e-8)
    np.testing.assert_allclose(integrals, (1 - decay[:, None]) * y0.sum(-1), rtol=1e-8)
    np.testing.assert_array_equal(ys[1], end[0])
    np.testing.assert_array_equal(ys[2], y0)


def _decay(t, y, args):
    """dy/dt = -k y for one example; k is the example's own PerExample row [1, 1]."""
    return -args["k"].value[0, 0] * y


def test_each_example_gets_its_own_rows_and_its_own_steps():
    """y_i(t1) = y0_i exp(-k_i (t1 - t0)) per example; an example solved alone equals its row
    of the batch, whose NFE is the largest of the examples' (they step in lockstep)."""
    k = jnp.asarray([[0.5], [40.0], [3.0]])
    y0 = jnp.asarray([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])
    kw = dict(rtol=1e-9, atol=1e-9)
    rows = lambda k: {"k": odeint.PerExample(k)}
    y1, nfe, _ = odeint.solve(_decay, y0, 0.0, 1.5, args=rows(k), **kw)
    np.testing.assert_allclose(y1, y0 * jnp.exp(-k * 1.5), rtol=1e-6, atol=1e-8)
    alone = [
        odeint.solve(
            _decay, y0[i : i + 1], 0.0, 1.5, args={"k": odeint.PerExample(k[i : i + 1])}, **kw
        )
        for i in range(3)
    ]
    for i, (row, _, _) in enumerate(alone):
        chex.assert_trees_all_close(row[0], y1[i], rtol=1e-12, atol=1e-15)  # rounding only
    nfes = [int(n) for _, n, _ in alone]
    assert int(nfe) == max(nfes) and nfes[1] > nfes[0]  # the stiff example sets the pace


def test_unknown_solver_is_a_clear_error():
    with pytest.raises(ValueError, match="solver"):
        odeint.solve(_decay, jnp.ones((1, 2)), 0.0, 1.0, rtol=1e-3, atol=1e-3, solver="rk4")
