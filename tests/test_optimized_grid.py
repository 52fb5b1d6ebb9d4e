"""The ``"optimized"`` time grid (score_sde/sampling/grid_tables.py, bench/optimize_grid.py):
a table per solver (dpm_solver, unipc) and SDE family, a valid grid for every SDE and step
count, computable from a traced SDE, under each family's SDE better than the logsnr grid for
DPM-Solver++(2M) on a sharp mixture the tables were not fitted on, unipc's own table better for
UniPC at few steps (5 under VP and VP-cosine, 10 under sub-VP) than dpm_solver's, and the
default grid of dpm_solver and unipc where measured better."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import sharp_modes, within_mode_variance

from score_sde import analytic, sampling
from score_sde import sde as sde_lib
from score_sde.sampling import dpm_solver, grid_tables, grids, unipc

SDES = [sde_lib.VPSDE(), sde_lib.VPSDE(schedule="cosine"), sde_lib.SubVPSDE(), sde_lib.VESDE()]
FAMILIES = ["vp", "vp-cosine", "subvp", "ve"]
SOLVERS = ["dpm_solver", "unipc"]  # the solvers with tables
TABLES = grid_tables.TABLES["dpm_solver"]
TABLE = TABLES["vp"]


def lambda_fractions(sde, ts):
    lam = sde.half_log_snr(ts)
    return (lam - lam[0]) / (lam[-1] - lam[0])


# Jitted: one compilation per SDE and step count (op by op, every op compiles per shape).
time_grid = jax.jit(grids.time_grid, static_argnums=(1, 2), static_argnames=("solver",))


def test_each_sde_has_the_family_of_its_table():
    """Parameters other than the defaults keep the family (the table applies as fractions of
    that SDE's lambda span); sub-VP's cosine schedule is a family without a table."""
    assert [sde.grid_family for sde in SDES] == FAMILIES
    assert sorted(grid_tables.TABLES) == SOLVERS
    for solver in SOLVERS:
        assert sorted(grid_tables.TABLES[solver]) == sorted(FAMILIES), solver
    assert sde_lib.VPSDE(beta_max=15.0).grid_family == "vp"
    assert sde_lib.VESDE(sigma_max=80.0).grid_family == "ve"
    assert sde_lib.SubVPSDE(schedule="cosine").grid_family == "subvp-cosine"


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("sde", SDES, ids=FAMILIES)
def test_a_valid_grid_from_T_to_the_end_time_at_the_tabled_fractions(sde, solver):
    table = grid_tables.TABLES[solver][sde.grid_family]
    for n in (8, 13, 20):  # tabled, interpolated, tabled past VP's switch of end time
        ts = time_grid(sde, n, "optimized", solver=solver)
        chex.assert_shape(ts, (n + 1,))
        assert ts[0] == sde.T and ts[-1] == sde.end_time(n), n
        assert jnp.all(jnp.diff(ts) < 0), n
        if n in table:
            np.testing.assert_allclose(lambda_fractions(sde, ts), table[n], atol=1e-9)
        backwards = time_grid(
            sde, n, "optimized", t_start=sde.end_time(n), t_end=sde.T, solver=solver
        )
        np.testing.assert_allclose(backwards, ts[::-1], rtol=1e-9)  # inversion: the same times


def test_interpolation_between_budgets_is_monotone_and_lies_between_them():
    for solver, family, n in itertools.product(SOLVERS, FAMILIES, range(1, 121)):
        f = grid_tables.fractions(solver, family, n)
        assert f.shape == (n + 1,) and f[0] == 0.0 and f[-1] == 1.0, (solver, family, n)
        assert np.all(np.diff(f) > 0), (solver, family, n)
    lo, hi = 8, 10
    assert lo in TABLE and hi in TABLE and 9 not in TABLE
    u = np.linspace(0, 1, 10)
    curve = lambda b: np.interp(u, np.linspace(0, 1, b + 1), TABLE[b])
    f9 = grid_tables.fractions("dpm_solver", "vp", 9)
    assert np.all(np.minimum(curve(lo), curve(hi)) - 1e-12 <= f9)
    assert np.all(f9 <= np.maximum(curve(lo), curve(hi)) + 1e-12)


def test_a_solver_or_an_sde_family_without_a_table_is_a_clear_error():
    with pytest.raises(ValueError, match="no table for solver=None"):
        grids.time_grid(sde_lib.VPSDE(), 10, "optimized")
    sde = sde_lib.SubVPSDE(schedule="cosine")
    for solver in SOLVERS:
        want = f"family 'subvp-cosine'.*optimize_grid.py --sde subvp-cosine --solvers {solver}`"
        with pytest.raises(ValueError, match=want):
            sampling.METHODS[solver].grid(sde, n_steps=10, time_grid="optimized")


@pytest.mark.usefixtures("x64")
def test_sample_under_jit_with_a_traced_sde():
    """``sample`` traces the SDE (a pytree argument): the grid comes from its traced fields."""
    mix = analytic.GaussianMixture.isotropic([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], 0.3)
    sde = sde_lib.VPSDE(beta_max=15.0)
    rng, shape = jax.random.PRNGKey(0), (8, 2)
    x, nfe = sampling.sample(
        rng, sde, mix.score_fn(sde), shape, method="dpm_solver", n_steps=8,
        time_grid="optimized", denoise=False,
    )  # fmt: skip
    assert nfe == 8
    ts = jax.jit(lambda s: dpm_solver.grid(s, n_steps=8, time_grid="optimized"))(sde)
    np.testing.assert_allclose(ts, dpm_solver.grid(sde, n_steps=8, time_grid="optimized"))
    x_T = sde.prior_sampling(jax.random.split(rng)[0], shape)
    want, _ = sampling.solve(None, sde, mix.score_fn(sde), x_T, ts, method="dpm_solver")
    np.testing.assert_allclose(x, want, rtol=1e-12)


def heldout_mixture():
    """9 modes on a 3x3 grid of spacing 1.5, std 0.05: not a proxy of bench/optimize_grid.py."""
    axis = 1.5 * np.arange(-1.0, 2.0)
    means = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    return analytic.GaussianMixture.isotropic(np.ones(9), means, 0.05)


# family: {n_steps: the largest error ratio optimized/logsnr accepted} (measured: the docstring)
MARGIN = {"vp": {8: 0.9, 10: 0.75}, "vp-cosine": {10: 0.97}, "subvp": {10: 0.4}, "ve": {10: 0.9}}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("sde", SDES, ids=FAMILIES)
def test_dpm_solver_is_closer_to_the_exact_flow_on_a_held_out_sharp_mixture(sde):
    """Under each family's SDE, at 10 NFE (and 8 for VP), DPM-Solver++(2M)'s mean squared
    distance to the exact flow from the same 2000 prior draws, on the optimized grid over the
    logsnr grid (the default): measured here 0.84 and 0.55 (vp), 0.93 (vp-cosine: the thinnest;
    0.94 over bench/optimize_grid.py's 4 x 512 fresh draws), 0.24 (subvp), 0.78 (ve). The error
    is mostly draws that end in a neighbouring mode."""
    mix = heldout_mixture()
    score_fn = mix.score_fn(sde)
    x_T = sde.prior_sampling(jax.random.PRNGKey(5), (2000, 2))
    for n, margin in MARGIN[sde.grid_family].items():
        eps = sde.end_time(n)  # the exact flow to the grids' own end
        exact, _ = sampling.solve(
            None, sde, score_fn, x_T, grids.time_grid(sde, 200, "logsnr", t_end=eps),
            method="dpm_solver", order=3, stepping="singlestep",
        )  # fmt: skip
        mse = {}
        for kind in ("optimized", "logsnr"):
            ts = dpm_solver.grid(sde, n_steps=n, time_grid=kind)
            x, _ = sampling.solve(None, sde, score_fn, x_T, ts, method="dpm_solver")
            mse[kind] = float(jnp.mean((x - exact) ** 2))
        assert mse["optimized"] < margin * mse["logsnr"], (n, mse)


ALL_SDES = [*SDES, sde_lib.SubVPSDE(schedule="cosine")]  # the last: a family without a table


def test_dpm_solvers_default_grid_is_optimized_where_measured_better_and_logsnr_elsewhere():
    """bench/grid_families.py: at 20 NFE the optimized grid beat logsnr under VP, VP-cosine and
    sub-VP, not under VE; a family without a table samples on logsnr, without an error."""
    kinds = [grid_tables.default_kind("dpm_solver", sde.grid_family) for sde in ALL_SDES]
    assert kinds == ["optimized"] * 3 + ["logsnr"] * 2
    for sde, kind in zip(ALL_SDES, kinds, strict=True):
        want = time_grid(sde, 12, kind, solver="dpm_solver")
        got = dpm_solver.grid(sde, n_steps=12)
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=sde.grid_family)
    sde = ALL_SDES[-1]
    mix = analytic.GaussianMixture.isotropic([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], 0.3)
    for method in ("dpm_solver", "unipc"):
        x, nfe = sampling.sample(jax.random.PRNGKey(0), sde, mix.score_fn(sde), (4, 2), method)
        assert nfe == 21 and bool(jnp.all(jnp.isfinite(x))), method


UNIPC_OWN = [FAMILIES.index(f) for f in grid_tables.DEFAULT_FAMILIES["unipc"]]


def test_unipcs_default_grid_is_its_own_table_up_to_10_steps_where_measured_better():
    """bench/unipc_grid.py: unipc's own table beat dpm_solver's default grid at 5-10 NFE under
    VP, VP-cosine and sub-VP, not at 15-20 (nor under VE at 10, against logsnr); elsewhere, and
    beyond ``unipc.OWN_GRID_UP_TO`` = 10 steps, unipc takes dpm_solver's default grid.
    ``time_grid="optimized"`` is its own table."""
    assert grid_tables.DEFAULT_FAMILIES["unipc"] == ("vp", "vp-cosine", "subvp")
    assert unipc.OWN_GRID_UP_TO == 10
    for i, sde in enumerate(ALL_SDES):
        for n in (5, 10, 11, 20):
            own = i in UNIPC_OWN and n <= 10
            want = (
                time_grid(sde, n, "optimized", solver="unipc")
                if own
                else dpm_solver.grid(sde, n_steps=n)
            )
            got = unipc.grid(sde, n_steps=n)
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"{sde.grid_family} {n}")
        if i < len(SDES):  # a family with a table
            own = time_grid(sde, 20, "optimized", solver="unipc")
            got = unipc.grid(sde, n_steps=20, time_grid="optimized")
            np.testing.assert_allclose(got, own, rtol=1e-5)
            assert not np.allclose(own, time_grid(sde, 20, "optimized", solver="dpm_solver"))


# family: (n_steps, the largest ratio of excess variances own table / dpm_solver's accepted)
UNIPC_CASES = {"vp": (5, 0.5), "vp-cosine": (5, 0.5), "subvp": (10, 0.7)}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("family", UNIPC_CASES)
def test_unipc_keeps_modes_their_width_at_few_steps_on_its_own_table(family):
    """UniPC-2 on a 2-D mixture of 3 modes of std 0.35 (bench/targets.py's "2d"): the mean
    squared distance of 8000 samples to their nearest mode over its exact value 2 s², less 1,
    on unipc's own table (its default) and on dpm_solver's. Measured 0.13 and 0.39 (VP, 5
    steps), 0.12 and 0.43 (VP-cosine, 5), 0.17 and 0.31 (sub-VP, 10; at 5 both 0.81);
    exact samples 0.99 - 1 = -0.01."""
    sde, (n, margin) = SDES[FAMILIES.index(family)], UNIPC_CASES[family]
    mix = analytic.GaussianMixture.isotropic(
        [0.3, 0.4, 0.3], [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], 0.35
    )
    x_T = sde.prior_sampling(jax.random.PRNGKey(5), (8000, 2))
    own = time_grid(sde, n, "optimized", solver="unipc")
    np.testing.assert_allclose(unipc.grid(sde, n_steps=n), own, rtol=1e-5)
    excess = {}
    for solver in SOLVERS:
        ts = time_grid(sde, n, "optimized", solver=solver)
        x, _ = sampling.solve(None, sde, mix.score_fn(sde), x_T, ts, method="unipc")
        d2 = jnp.sum((x[:, None] - mix.means[None]) ** 2, axis=-1)
        excess[solver] = float(jnp.mean(jnp.min(d2, axis=1))) / (2 * 0.35**2) - 1.0
    assert 0 < excess["unipc"] < margin * excess["dpm_solver"], excess


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("sde", SDES[:3], ids=FAMILIES[:3])
def test_unipc_at_its_defaults_keeps_sharp_modes_their_width_at_20_nfe(sde):
    """UniPC at its defaults (data prediction on the optimized grid), 19 steps and the denoising
    step, on modes of std 1/30 of their spacing: the mean squared distance of 4000 samples to
    their nearest mode over its exact value, measured 0.96-1.02 under VP, sub-VP and VP-cosine.
    The former defaults (noise prediction, logsnr grid) widen the modes: 1.23-1.69. At 5 NFE
    (5 steps: UniPC-2 on unipc's own grid under VP and VP-cosine, dpm_solver's under sub-VP)
    noise prediction throws samples far off the modes (69-1,443) where data prediction stays
    near them (5.37, 5.14, 4.19; 3.99-4.19 on dpm_solver's grid)."""
    mix = sharp_modes(1.0)

    def ratio(n_steps, **options):
        x, nfe = sampling.sample(
            jax.random.PRNGKey(0), sde, mix.score_fn(sde), (4000, 2), "unipc", n_steps=n_steps,
            **options,
        )  # fmt: skip
        assert nfe == n_steps + (n_steps > sampling.FEW_STEPS)  # the denoising step from 16
        return within_mode_variance(mix, x)[0]

    at_20 = ratio(19), ratio(19, prediction="noise", time_grid="logsnr")
    assert abs(at_20[0] - 1) < 0.07 and at_20[1] > 1.15, at_20
    at_5 = ratio(5), ratio(5, prediction="noise")
    assert at_5[0] < 10 and at_5[1] > 10 * at_5[0], at_5
