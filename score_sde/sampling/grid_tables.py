"""Tables of the ``"optimized"`` time grid: per solver and SDE family (``SDE.grid_family``:
"vp" the linear-schedule VPSDE, "vp-cosine", "subvp", "ve"), {n_steps: fractions f_0 = 0 < ... <
f_n = 1 of the lambda span}, the grid being lambda_i = lambda(T) + f_i (lambda(t_end) - lambda(T)).

A family's table is fitted at the family's default parameters (VPSDE(), VPSDE(schedule="cosine"),
SubVPSDE(), VESDE()) on the span T -> sde.end_time(n_steps) of each n_steps (VPSDE: 1e-3 up to
15 steps, 1e-4 beyond), and applied as fractions of the lambda span of whatever SDE instance of
that family is passed (other betas or sigmas, other end times): fractions keep the table free of
the SDE's parameters, so a grid is a few jnp ops on traced SDE fields. They do not carry across
families (the VP table gave 1.5-2.2x the logsnr grid's error under SubVPSDE(), 0.9-1.8x under
VESDE()), hence a table per family; a family without one (e.g. SubVPSDE(schedule="cosine")) is a
ValueError, and ``python bench/optimize_grid.py --sde FAMILY`` fits one.

Provenance: the comment above each family's table (the commands of bench/optimize_grid.py that
fitted it, and the date); their defaults: solver dpm_solver, i.e. DPM-Solver++(2M) with
lower_order_final, 100 Adam iterations from each of the logsnr, edm and uniform grids. Its
docstring gives the proxy targets (Gaussian mixtures of mode std 1/30 to 1 of the mode spacing,
and a 64-D Gaussian of stds 0.01 to 1) and the objective (the MSE of x(eps) to the exact
probability-flow solution from the same prior draw, relative to the logsnr grid's).

Measured (``--evaluate`` or the fit's own report; 4 fresh batches of 512 draws): error over the
logsnr grid's, mean over the proxies, at each fitted step count:
  steps      5    6    8    10   12   15   20   25   30   40   50
  vp         0.40 0.51 0.54 0.51 0.46 0.44 0.40 0.39 0.51 0.28 0.46
  vp-cosine  0.48 0.50 0.55 0.46 0.45 0.46 0.38 0.42 0.53 0.47 0.52
  subvp      0.21 0.30 0.28 0.25 0.22 0.23 0.21 0.27 0.27 0.14 0.18
  ve         0.64 0.70 0.63 0.58 0.56 0.55 0.59 0.59 0.76 0.69 0.74
On the held-out target (3x3 modes of std 0.05, never fitted on) at 5, 8, 10, 15 steps: vp 0.33,
0.79, 0.51, 0.14; vp-cosine 0.28, 1.43, 0.94, 0.29; subvp 0.24, 0.22, 0.23, 0.19; ve 0.53, 1.28,
0.75, 0.05. From 20 steps on it swings from 0.001 to 53 (worse than logsnr: vp-cosine 53 at 20,
subvp 3.3 at 30, ve 1.3 and 1.2 at 20 and 30), unlike the proxies: one sharp target is a noisy
judge of a grid. The default grid of dpm_solver and unipc was therefore chosen on the four
targets of bench/samplers.py under each family's SDE (``DEFAULT_FAMILIES``;
bench/grid_families.py, docs/benchmarks.md).
"""

from __future__ import annotations

import math

import numpy as np

Fractions = tuple[float, ...]

# fmt: off
TABLES: dict[str, dict[str, dict[int, Fractions]]] = {
    "dpm_solver": {
        # vp: `python bench/optimize_grid.py --sde vp --budgets 5 20`, `python
        # bench/optimize_grid.py --sde vp --budgets 30 50`, `python bench/optimize_grid.py
        # --sde vp --budgets 25 40` (2026-12-03); 6-15 from the earlier `python
        # bench/optimize_grid.py --interpolation` VP fit, on the same span (to 1e-3): its 5
        # was reproduced to 4 digits.
        "vp": {
            5: (0.0, 0.3607, 0.4459, 0.591, 0.7586, 1.0),
            6: (0.0, 0.3439, 0.4217, 0.5473, 0.6618, 0.8009, 1.0),
            8: (0.0, 0.2666, 0.3798, 0.4651, 0.573, 0.6726, 0.735, 0.8673, 1.0),
            10: (0.0, 0.2214, 0.3294, 0.3976, 0.4823, 0.5642, 0.6475, 0.6969, 0.755,
                0.868, 1.0),
            12: (0.0, 0.1976, 0.3116, 0.3737, 0.4234, 0.4854, 0.5536, 0.6178, 0.6622,
                0.7131, 0.7615, 0.8635, 1.0),
            15: (0.0, 0.148, 0.2641, 0.3335, 0.385, 0.4304, 0.476, 0.5343, 0.5844,
                0.634, 0.6725, 0.7137, 0.7519, 0.7964, 0.8836, 1.0),
            20: (0.0, 0.1135, 0.2077, 0.2687, 0.309, 0.3422, 0.374, 0.4015, 0.4402,
                0.4782, 0.5129, 0.5435, 0.5741, 0.6038, 0.6338, 0.665, 0.6976, 0.732,
                0.7746, 0.85, 1.0),
            25: (0.0, 0.0786, 0.1547, 0.2164, 0.261, 0.2945, 0.3224, 0.3477, 0.3717,
                0.3969, 0.4261, 0.4574, 0.4848, 0.5093, 0.5351, 0.5661, 0.5916, 0.6146,
                0.6394, 0.6641, 0.6903, 0.7195, 0.7534, 0.787, 0.8598, 1.0),
            30: (0.0, 0.1219, 0.1919, 0.2325, 0.2652, 0.2924, 0.316, 0.3374, 0.3577,
                0.3794, 0.405, 0.4303, 0.4519, 0.4713, 0.4906, 0.5056, 0.5356, 0.5576,
                0.5788, 0.6012, 0.62, 0.6395, 0.659, 0.6805, 0.7036, 0.7288, 0.7565,
                0.7863, 0.8172, 0.8831, 1.0),
            40: (0.0, 0.0872, 0.157, 0.1999, 0.2314, 0.257, 0.279, 0.2986, 0.3167,
                0.3336, 0.3498, 0.366, 0.3826, 0.4003, 0.4191, 0.4374, 0.4546, 0.4711,
                0.4867, 0.5008, 0.5162, 0.5353, 0.5531, 0.5718, 0.5866, 0.6012, 0.6156,
                0.6293, 0.6439, 0.6594, 0.6752, 0.692, 0.7098, 0.7289, 0.7493, 0.7713,
                0.7948, 0.8243, 0.8488, 0.9077, 1.0),
            50: (0.0, 0.0483, 0.0971, 0.1425, 0.182, 0.2141, 0.2396, 0.2601, 0.2773,
                0.2926, 0.3069, 0.3207, 0.3341, 0.3473, 0.3606, 0.3743, 0.3888, 0.4042,
                0.4202, 0.4354, 0.4488, 0.4603, 0.4708, 0.4813, 0.4925, 0.5077, 0.5239,
                0.5396, 0.5539, 0.5673, 0.5796, 0.5921, 0.6044, 0.6163, 0.6284, 0.6396,
                0.6514, 0.6642, 0.6781, 0.6925, 0.7076, 0.7234, 0.7399, 0.7573, 0.7755,
                0.7949, 0.8163, 0.8408, 0.8711, 0.9176, 1.0),
        },
        # vp-cosine: `python bench/optimize_grid.py --sde vp-cosine --budgets 5 8 10 15 20
        # 30 50`, `python bench/optimize_grid.py --sde vp-cosine --budgets 6 12 25 40`
        # (2026-12-03).
        "vp-cosine": {
            5: (0.0, 0.3253, 0.4021, 0.5454, 0.7095, 1.0),
            6: (0.0, 0.3167, 0.3968, 0.5342, 0.6458, 0.7942, 1.0),
            8: (0.0, 0.2845, 0.3541, 0.4648, 0.5703, 0.6629, 0.7331, 0.8636, 1.0),
            10: (0.0, 0.2528, 0.3221, 0.3868, 0.4646, 0.5472, 0.6173, 0.6718, 0.7241,
                0.8362, 1.0),
            12: (0.0, 0.2038, 0.2931, 0.3442, 0.3973, 0.4704, 0.528, 0.6002, 0.6382,
                0.6907, 0.7342, 0.8366, 1.0),
            15: (0.0, 0.1765, 0.265, 0.3179, 0.3623, 0.4092, 0.4689, 0.5132, 0.5746,
                0.6073, 0.6458, 0.6892, 0.7304, 0.7749, 0.8641, 1.0),
            20: (0.0, 0.1327, 0.2145, 0.2603, 0.2952, 0.3251, 0.3524, 0.3812, 0.4247,
                0.4502, 0.4938, 0.5216, 0.5539, 0.5806, 0.6076, 0.6388, 0.6718, 0.7059,
                0.7441, 0.8205, 1.0),
            25: (0.0, 0.1404, 0.1835, 0.2139, 0.2408, 0.2735, 0.3009, 0.3258, 0.3517,
                0.38, 0.4081, 0.4364, 0.4638, 0.4898, 0.5154, 0.5404, 0.5642, 0.5876,
                0.611, 0.6353, 0.6611, 0.6891, 0.7198, 0.7568, 0.8199, 1.0),
            30: (0.0, 0.0926, 0.1615, 0.2045, 0.2364, 0.2628, 0.2865, 0.3086, 0.33,
                0.3525, 0.3775, 0.4001, 0.4213, 0.4455, 0.4611, 0.4817, 0.511, 0.5266,
                0.5547, 0.5712, 0.5902, 0.6091, 0.6298, 0.6507, 0.6739, 0.6994, 0.728,
                0.7578, 0.7905, 0.8585, 1.0),
            40: (0.0, 0.0981, 0.1379, 0.1706, 0.1984, 0.2226, 0.2439, 0.2629, 0.2806,
                0.2975, 0.3142, 0.3312, 0.3486, 0.3657, 0.3823, 0.3982, 0.4137, 0.4288,
                0.4436, 0.4582, 0.4727, 0.4871, 0.5017, 0.5164, 0.5314, 0.5467, 0.5624,
                0.5784, 0.595, 0.6121, 0.6299, 0.6485, 0.6681, 0.6889, 0.711, 0.7345,
                0.7594, 0.786, 0.8183, 0.8722, 1.0),
            50: (0.0, 0.0739, 0.119, 0.1562, 0.1851, 0.2089, 0.2292, 0.2471, 0.2633,
                0.2782, 0.2922, 0.3057, 0.3189, 0.3321, 0.3457, 0.36, 0.3747, 0.3887,
                0.4024, 0.4171, 0.4313, 0.4437, 0.4549, 0.4657, 0.4776, 0.4932, 0.5079,
                0.522, 0.5358, 0.5477, 0.5586, 0.57, 0.5813, 0.5926, 0.6042, 0.6159,
                0.6281, 0.6408, 0.654, 0.6678, 0.6824, 0.6977, 0.7139, 0.7312, 0.7498,
                0.7701, 0.7928, 0.8174, 0.845, 0.8981, 1.0),
        },
        # subvp: `python bench/optimize_grid.py --sde subvp --budgets 5 8 10 15 20 30 50`,
        # `python bench/optimize_grid.py --sde subvp --budgets 6 12 25 40` (2026-12-03).
        "subvp": {
            5: (0.0, 0.2485, 0.317, 0.4277, 0.5586, 1.0),
            6: (0.0, 0.24, 0.2907, 0.3847, 0.4669, 0.5652, 1.0),
            8: (0.0, 0.2246, 0.2726, 0.3544, 0.4324, 0.4943, 0.5501, 0.6471, 1.0),
            10: (0.0, 0.1375, 0.2147, 0.2632, 0.3158, 0.3829, 0.435, 0.478, 0.5203,
                0.6085, 1.0),
            12: (0.0, 0.1347, 0.2119, 0.2549, 0.2953, 0.3425, 0.3882, 0.4332, 0.4655,
                0.5022, 0.5385, 0.6131, 1.0),
            15: (0.0, 0.0941, 0.1699, 0.2192, 0.2526, 0.2796, 0.3218, 0.3636, 0.3967,
                0.4346, 0.466, 0.5031, 0.5349, 0.5663, 0.6274, 1.0),
            20: (0.0, 0.0918, 0.1622, 0.2059, 0.2368, 0.2626, 0.2876, 0.3153, 0.3455,
                0.3723, 0.4001, 0.4281, 0.4496, 0.4718, 0.4941, 0.5179, 0.5449, 0.5712,
                0.6041, 0.6661, 1.0),
            25: (0.0, 0.0538, 0.1051, 0.1521, 0.1915, 0.2224, 0.2468, 0.2677, 0.2884,
                0.3175, 0.3428, 0.3648, 0.389, 0.4112, 0.4329, 0.4526, 0.4708, 0.4889,
                0.508, 0.5283, 0.5523, 0.5755, 0.6007, 0.6324, 0.6896, 1.0),
            30: (0.0, 0.056, 0.1086, 0.153, 0.1878, 0.2147, 0.2371, 0.2572, 0.2767,
                0.2963, 0.3155, 0.3346, 0.3543, 0.3726, 0.3951, 0.4148, 0.4308, 0.4453,
                0.46, 0.4741, 0.4892, 0.5051, 0.522, 0.5404, 0.5606, 0.5819, 0.602,
                0.6245, 0.654, 0.7053, 1.0),
            40: (0.0, 0.0433, 0.0874, 0.1269, 0.159, 0.184, 0.204, 0.2209, 0.2358,
                0.2492, 0.2619, 0.2741, 0.2866, 0.2997, 0.3135, 0.3279, 0.342, 0.3543,
                0.3653, 0.3769, 0.3895, 0.4046, 0.4186, 0.4322, 0.4449, 0.4573, 0.469,
                0.4806, 0.4924, 0.5049, 0.5182, 0.5322, 0.547, 0.5624, 0.5793, 0.5981,
                0.6195, 0.6421, 0.6664, 0.7206, 1.0),
            50: (0.0, 0.0417, 0.0828, 0.1183, 0.1471, 0.1701, 0.1888, 0.2047, 0.2186,
                0.2311, 0.2427, 0.2537, 0.2642, 0.2745, 0.2849, 0.2957, 0.3074, 0.3195,
                0.3311, 0.3421, 0.3532, 0.3633, 0.3715, 0.3804, 0.3924, 0.4023, 0.4159,
                0.4271, 0.4367, 0.4463, 0.4557, 0.4649, 0.4736, 0.4826, 0.4917, 0.501,
                0.5107, 0.5207, 0.5312, 0.5423, 0.554, 0.5665, 0.5797, 0.5943, 0.6098,
                0.6271, 0.6453, 0.6658, 0.6925, 0.7387, 1.0),
        },
        # ve: `python bench/optimize_grid.py --sde ve --budgets 5 8 10 15 20 30 50`, `python
        # bench/optimize_grid.py --sde ve --budgets 6 12 25 40` (2026-12-03).
        "ve": {
            5: (0.0, 0.2748, 0.3845, 0.5411, 0.729, 1.0),
            6: (0.0, 0.2679, 0.3672, 0.5209, 0.6421, 0.8108, 1.0),
            8: (0.0, 0.229, 0.3066, 0.4185, 0.5331, 0.6377, 0.6992, 0.8511, 1.0),
            10: (0.0, 0.1699, 0.258, 0.329, 0.4128, 0.503, 0.5856, 0.6423, 0.7051,
                0.8214, 1.0),
            12: (0.0, 0.1722, 0.26, 0.3149, 0.3711, 0.4387, 0.513, 0.5806, 0.6284,
                0.6852, 0.7357, 0.8472, 1.0),
            15: (0.0, 0.1406, 0.2143, 0.2668, 0.3122, 0.3594, 0.407, 0.4689, 0.5215,
                0.5748, 0.6128, 0.6604, 0.7106, 0.7534, 0.8541, 1.0),
            20: (0.0, 0.0966, 0.1793, 0.2361, 0.2782, 0.3143, 0.3474, 0.386, 0.4288,
                0.4623, 0.5062, 0.5434, 0.5799, 0.6182, 0.6522, 0.6855, 0.7195, 0.7591,
                0.807, 0.8828, 1.0),
            25: (0.0, 0.0778, 0.1464, 0.2056, 0.2457, 0.2811, 0.3141, 0.3457, 0.376,
                0.4044, 0.4415, 0.473, 0.5064, 0.5417, 0.5688, 0.5992, 0.6277, 0.6541,
                0.6811, 0.7091, 0.7388, 0.7723, 0.8086, 0.8523, 0.9145, 1.0),
            30: (0.0, 0.0412, 0.0833, 0.126, 0.1683, 0.2094, 0.249, 0.2864, 0.3184,
                0.3451, 0.3698, 0.3943, 0.4212, 0.4494, 0.478, 0.5101, 0.5378, 0.5649,
                0.5927, 0.6178, 0.6415, 0.6628, 0.6834, 0.7047, 0.7276, 0.7528, 0.7813,
                0.8145, 0.8521, 0.9216, 1.0),
            40: (0.0, 0.0495, 0.1092, 0.1516, 0.1857, 0.2147, 0.2406, 0.2645, 0.2873,
                0.3094, 0.3314, 0.3527, 0.3725, 0.39, 0.4072, 0.4269, 0.4552, 0.4782,
                0.4957, 0.5144, 0.5378, 0.5549, 0.5718, 0.5899, 0.6062, 0.6229, 0.6396,
                0.6569, 0.6741, 0.6918, 0.7101, 0.7291, 0.7488, 0.7696, 0.7916, 0.8152,
                0.8409, 0.87, 0.8977, 0.9494, 1.0),
            50: (0.0, 0.0362, 0.0829, 0.1218, 0.1549, 0.1832, 0.208, 0.2302, 0.2503,
                0.269, 0.2865, 0.3032, 0.3192, 0.3347, 0.3497, 0.3643, 0.3785, 0.3927,
                0.4078, 0.4251, 0.4448, 0.4632, 0.4787, 0.4921, 0.5066, 0.5256, 0.5379,
                0.5527, 0.568, 0.583, 0.597, 0.6104, 0.6244, 0.6383, 0.6524, 0.6664,
                0.6807, 0.6952, 0.7103, 0.7257, 0.7419, 0.7587, 0.7765, 0.7952, 0.8152,
                0.8366, 0.8599, 0.8853, 0.9119, 0.9564, 1.0),
        },
    },
}
# fmt: on


def interpolate(table: dict[int, Fractions], n_steps: int) -> np.ndarray:
    """The fractions for ``n_steps``: the table's own, else each neighbouring budget's fractions
    read as a curve f(u) of the position u = i/n (piecewise linear), resampled at u = i/n_steps
    and blended with weights linear in log(n_steps) between the two budgets (the nearest one
    alone outside the table). That is AYS's log-linear interpolation (linear in log sigma, and
    lambda = -log sigma~). Piecewise-linear curves of strictly increasing tables are strictly
    increasing, and so are their convex blends: every n_steps >= 1 gets a valid grid."""
    if n_steps in table:
        return np.asarray(table[n_steps], float)
    budgets = sorted(table)
    lo = max((b for b in budgets if b < n_steps), default=budgets[0])
    hi = min((b for b in budgets if b > n_steps), default=budgets[-1])
    u = np.linspace(0.0, 1.0, n_steps + 1)

    def curve(b: int) -> np.ndarray:
        return np.interp(u, np.linspace(0.0, 1.0, b + 1), table[b])

    w = 0.0 if lo == hi else (math.log(n_steps) - math.log(lo)) / (math.log(hi) - math.log(lo))
    f = (1.0 - w) * curve(lo) + w * curve(hi)
    f[0], f[-1] = 0.0, 1.0
    return f


# solver: the SDE families whose optimized table is its default grid. Chosen by measurement on
# the bench targets, which no table was fitted on (docs/benchmarks.md, "The default grid per SDE
# family"): there it beat "logsnr" at 20 NFE; under "ve" it did not.
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {"dpm_solver": ("vp", "vp-cosine", "subvp")}


def default_kind(solver: str, family: str) -> str:
    """The default ``time_grid`` of ``solver`` under an SDE of ``family``: "optimized" where
    ``DEFAULT_FAMILIES`` lists the family, else "logsnr"."""
    return "optimized" if family in DEFAULT_FAMILIES.get(solver, ()) else "logsnr"


def fractions(solver: str | None, family: str, n_steps: int) -> np.ndarray:
    """The optimised fractions of ``solver`` for ``n_steps`` steps under an SDE of ``family``
    (``SDE.grid_family``; ``interpolate``)."""
    if solver not in TABLES:
        raise ValueError(
            f"time_grid='optimized' has no table for solver={solver!r}; "
            f"tables exist for {sorted(TABLES)}."
        )
    if family not in TABLES[solver]:
        raise ValueError(
            f"time_grid='optimized' has no {solver} table for the SDE family {family!r} (tables "
            f"exist for {sorted(TABLES[solver])}): fit one with `python bench/optimize_grid.py "
            f"--sde {family}` (after adding the family's default SDE to that script's SDES) and "
            "paste it into score_sde/sampling/grid_tables.py, or use time_grid='logsnr'."
        )
    return interpolate(TABLES[solver][family], n_steps)
