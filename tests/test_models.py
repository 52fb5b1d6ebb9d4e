"""Score networks: shapes, functional use, dropout, labels, errors, precision and paper sizes."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_sde import models
from score_sde.models import up_down

B, S = 2, 8  # batch, image size
TINY = dict(image_size=S, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
VE_LIKE = dict(
    TINY, fir=True, progressive_input="residual", embedding_type="fourier", scale_by_sigma=True
)
# init_scale=1 (not the papers' 0) so that outputs are far from zero at initialisation.
VARIANTS = {
    "ddpmpp": ("ncsnpp", dict(TINY, init_scale=1.0)),
    "ncsnpp_ve": ("ncsnpp", dict(VE_LIKE, init_scale=1.0)),
    "skip_cat": (
        "ncsnpp",
        dict(
            TINY,
            init_scale=1.0,
            resblock_type="ddpm",
            fir=True,
            progressive="output_skip",
            progressive_input="input_skip",
            progressive_combine="cat",
        ),
    ),
    "residual": (
        "ncsnpp",
        dict(TINY, init_scale=1.0, progressive="residual", progressive_input="residual"),
    ),
    "ddpm": ("ddpm", TINY),  # zero-initialised output layers, as Ho et al.
    "mlp": ("mlp", dict(dim=5, width=32, num_blocks=2, init_scale=1.0)),
}
apply = jax.jit(models.apply, static_argnames="train")


def _inputs(name, key=0, size=S):
    shape = (B, 5) if name.startswith("mlp") else (B, size, size, 3)
    x = jax.random.normal(jax.random.key(key), shape)
    return x, jnp.array([0.02, 0.7]), jnp.array([0.05, 3.0])


def _model(name, seed=0, **kw):
    # RBG keys: the same model code, but much cheaper to compile than threefry on CPU.
    return models.create(name, nnx.Rngs(jax.random.key(seed, impl="rbg")), **kw)


# --- FIR resampling ------------------------------------------------------------------------


def _upfirdn_definition(x, k2, up, down, pad):
    """Zero-insert after each pixel, pad, convolve ('valid'), keep every down-th pixel."""
    b, h, w, c = x.shape
    z = np.zeros((b, h * up, w * up, c))
    z[:, ::up, ::up] = x
    z = np.pad(z, ((0, 0), pad, pad, (0, 0)))
    kh = k2.shape[0]
    ho, wo = z.shape[1] - kh + 1, z.shape[2] - kh + 1
    out = np.zeros((b, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = np.einsum("bhwc,hw->bc", z[:, i : i + kh, j : j + kh], k2[::-1, ::-1])
    return out[:, ::down, ::down]


def test_fir_resampling_matches_definition():
    k = (1, 3, 3, 1)
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    up = _upfirdn_definition(np.asarray(x), up_down.fir_kernel(k, 4.0), 2, 1, (2, 1))
    down = _upfirdn_definition(np.asarray(x), up_down.fir_kernel(k), 1, 2, (1, 1))
    np.testing.assert_allclose(up_down.upsample_2d(x, k), up, atol=1e-5)
    np.testing.assert_allclose(up_down.downsample_2d(x, k), down, atol=1e-5)
    # Unit gain: a constant image stays constant away from the zero-padded border.
    ones = jnp.ones((1, 8, 8, 1))
    np.testing.assert_allclose(up_down.upsample_2d(ones, k)[0, 2:-2, 2:-2], 1.0, rtol=1e-6)
    np.testing.assert_allclose(up_down.downsample_2d(ones, k)[0, 1:-1, 1:-1], 1.0, rtol=1e-6)


def test_fused_fir_conv_equals_unfused_in_interior():
    """upsample_conv = conv(upsample(x)), conv_downsample = downsample(conv(x)), but for borders."""
    k = (1, 3, 3, 1)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    conv = functools.partial(
        jax.lax.conv_general_dilated,
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    fused, plain = up_down.upsample_conv_2d(x, w, k), up_down.downsample_2d(conv(x, w), k)
    chex.assert_shape(fused, (2, 16, 16, 4))
    np.testing.assert_allclose(
        fused[:, 2:-2, 2:-2], conv(up_down.upsample_2d(x, k), w)[:, 2:-2, 2:-2], atol=1e-4
    )
    fused = up_down.conv_downsample_2d(x, w, k)
    chex.assert_shape(fused, (2, 4, 4, 4))
    np.testing.assert_allclose(fused[:, 1:-1, 1:-1], plain[:, 1:-1, 1:-1], atol=1e-4)


# --- shapes, labels, split/apply -------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shapes(variant):
    name, kw = VARIANTS[variant]
    x, t, sigma = _inputs(name)
    out = apply(*models.split(_model(name, **kw)), x, t, sigma)
    chex.assert_shape(out, x.shape)
    chex.assert_tree_all_finite(out)


@pytest.mark.parametrize(
    "name, kw",
    [
        ("classifier", dict(image_size=S, nf=8, ch_mult=(1, 2), attn_resolutions=(4,))),
        ("mlp_classifier", dict(dim=5, width=16, num_blocks=1, nf=8)),
    ],
)
def test_classifier_logits(name, kw):
    model = _model(name, num_classes=4, **kw)
    x, t, sigma = _inputs(name)
    state = models.split(model)
    logits = apply(*state, x, t, sigma)
    chex.assert_shape(logits, (B, 4))
    chex.assert_tree_all_finite(logits)
    # Noise-conditional: the same image at another noise level gives other logits.
    assert not np.allclose(logits, apply(*state, x, t + 0.2, sigma + 1.0), atol=1e-6)
    with pytest.raises(ValueError, match="y=None"):
        model(x, t, sigma, jnp.array([0, 1]))


def test_zero_initialised_outputs_as_reference():
    """init_scale=0 (all paper configs): last convs start at ~0, so the network outputs ~0."""
    for name, kw in (("ncsnpp", VE_LIKE), VARIANTS["ddpm"]):
        x, t, sigma = _inputs(name)
        out = apply(*models.split(_model(name, **kw)), x, t, sigma)
        assert float(jnp.abs(out).max()) < 1e-3, name


def test_fourier_weights_are_not_params():
    _, params, rest = models.split(_model("ncsnpp", **VE_LIKE))
    leaves = jax.tree.leaves(rest, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert [type(v) for v in leaves] == [models.FourierWeights]
    assert leaves[0][...].shape == (VE_LIKE["nf"],)
    assert not any(
        isinstance(v, models.FourierWeights)
        for v in jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    )
    assert models.count_params(rest) == VE_LIKE["nf"]
    # Positional-embedding models have nothing outside params.
    assert models.count_params(models.split(_model("ncsnpp", **TINY))[2]) == 0


# One resolution only: eager calls compile every op, so the eager comparison stays small.
ONE_LEVEL = dict(
    image_size=4,
    nf=8,
    ch_mult=(1,),
    num_res_blocks=1,
    attn_resolutions=(4,),
    embedding_type="fourier",
    scale_by_sigma=True,
    init_scale=1.0,
)


@pytest.mark.parametrize("name, kw", [("ncsnpp", ONE_LEVEL), VARIANTS["mlp"]], ids=["unet", "mlp"])
def test_labels_and_jit_apply_matches_eager_call(name, kw):
    model = _model(name, num_classes=3, null_label=True, **kw)
    x, t, sigma = _inputs(name, size=kw.get("image_size"))
    y = jnp.array([2, 0])
    graphdef, params, rest = models.split(model)
    out = apply(graphdef, params, rest, x, t, sigma, y)
    chex.assert_shape(out, x.shape)
    eager = model(x, t, sigma, y)
    np.testing.assert_allclose(out, eager, rtol=1e-4, atol=1e-4 * float(jnp.abs(eager).max()))
    # The label matters; the null label (id num_classes) is what y=None means (for CFG).
    null = apply(graphdef, params, rest, x, t, sigma)
    assert float(jnp.abs(null - out).max()) > 1e-3 * float(jnp.abs(out).max())
    np.testing.assert_array_equal(null, apply(graphdef, params, rest, x, t, sigma, y * 0 + 3))


def test_dropout_only_in_training_and_keyed_by_rng():
    name, kw = VARIANTS["ddpmpp"]  # dropout 0.1 (the default)
    model = _model(name, **kw)
    x, t, sigma = _inputs(name)
    g, p, r = models.split(model)
    k1, k2 = jax.random.key(1, impl="rbg"), jax.random.key(2, impl="rbg")
    evaluation = apply(g, p, r, x, t, sigma)
    np.testing.assert_array_equal(evaluation, apply(g, p, r, x, t, sigma, rng=k1))
    a = apply(g, p, r, x, t, sigma, train=True, rng=k1)
    np.testing.assert_array_equal(a, apply(g, p, r, x, t, sigma, train=True, rng=k1))
    assert not np.allclose(a, apply(g, p, r, x, t, sigma, train=True, rng=k2), atol=1e-4)
    assert not np.allclose(a, evaluation, atol=1e-4)
    with pytest.raises(ValueError, match="rngs"):
        model(x, t, sigma, train=True)


def test_scale_by_sigma_divides_the_output():
    name, kw = VARIANTS["ncsnpp_ve"]
    x, t, sigma = _inputs(name)
    scaled = apply(*models.split(_model(name, **kw)), x, t, sigma)
    plain = apply(*models.split(_model(name, **kw | dict(scale_by_sigma=False))), x, t, sigma)
    np.testing.assert_allclose(scaled * sigma[:, None, None, None], plain, rtol=1e-5)


def test_label_errors():
    x, t, sigma = _inputs("mlp")
    with pytest.raises(ValueError, match="num_classes=None"):
        _model("mlp", dim=5)(x, t, sigma, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="null_label=True"):
        _model("mlp", dim=5, num_classes=3)(x, t, sigma)


def test_bf16_compute_with_fp32_params():
    model = _model("ncsnpp", init_scale=1.0, dtype=jnp.bfloat16, **VE_LIKE)
    reference = _model("ncsnpp", init_scale=1.0, **VE_LIKE)
    _, params, _ = models.split(model)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    x, t, sigma = _inputs("ncsnpp")
    out = apply(*models.split(model), x.astype(jnp.bfloat16), t, sigma)
    assert out.dtype == jnp.bfloat16
    chex.assert_tree_all_finite(out)
    want = apply(*models.split(reference), x, t, sigma)
    rel = float(jnp.linalg.norm(out.astype(jnp.float32) - want) / jnp.linalg.norm(want))
    assert rel < 0.05, rel


# --- errors a user can make -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=12, ch_mult=(1, 2, 2, 2)), "divisible by 2"),
        (dict(image_size=16, ch_mult=(1, 2), attn_resolutions=(4,)), r"\[4\] not among"),
        (dict(image_size=8, resblock_type="resnet"), "resblock_type"),
        (dict(image_size=8, progressive="skip"), "output_skip"),
        (dict(image_size=8, embedding_type="sin"), "fourier"),
        (dict(image_size=8, nff=3), "Unknown option.*'nff'.*'nf'"),
    ],
)
def test_invalid_configuration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.create("ncsnpp", nnx.Rngs(0), **{"ch_mult": (1, 2), "attn_resolutions": ()} | kwargs)


def test_unknown_model_name_lists_valid_names():
    names = r"\['classifier', 'ddpm', 'dit', 'mlp', 'mlp_classifier', 'ncsnpp'\]"
    with pytest.raises(ValueError, match=r"'unet'.*" + names):
        models.create("unet", nnx.Rngs(0))


def test_mlp_classifier_takes_the_mlp_options_and_refuses_sigma_scaling():
    """Its constructor passes the MLP's options on, but for the labels and outputs it sets."""
    options = set(models.OPTIONS["mlp_classifier"])
    assert options == set(models.OPTIONS["mlp"]) - {"null_label", "outputs"}
    with pytest.raises(ValueError, match="Unknown option.*'ch_mult'"):
        _model("mlp_classifier", dim=5, num_classes=4, ch_mult=(1,))
    with pytest.raises(ValueError, match="scale_by_sigma"):
        _model("mlp_classifier", dim=5, num_classes=4, scale_by_sigma=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        _model("mlp_classifier", dim=5, num_classes=1)


# --- paper parameter counts -------------------------------------------------------------------

# Published sizes: DDPM 35.7M (Ho et al. 2020, §4). Song et al.'s CIFAR-10 models are quoted at
# about 62M (DDPM++ cont.), 63M (NCSN++ cont.) and 108M (NCSN++ cont. deep). DDPM++ cont. deep has
# no separate published figure that we could find: only its exact count is pinned.
PUBLISHED = {
    "ddpm_cifar10": 35.7e6,
    "ddpmpp_cifar10": 62e6,
    "ncsnpp_cifar10": 63e6,
    "ncsnpp_deep_cifar10": 108e6,
}
EXACT = {
    "ddpm_cifar10": 35_746_307,
    "ddpmpp_cifar10": 61_804_419,
    "ddpmpp_deep_cifar10": 106_632_579,
    "ncsnpp_cifar10": 62_758_787,
    "ncsnpp_deep_cifar10": 107_586_947,
}
# The DiT presets are counted in test_dit.py.
assert set(EXACT) == {k for k, v in models.PRESETS.items() if v["name"] != "dit"}


@pytest.mark.parametrize("preset", sorted(EXACT))
def test_preset_parameter_counts(preset, monkeypatch):
    # Speed only: jax 0.10 builds a costly error message each time flax probes a tracer's
    # .sharding while initialising under eval_shape; the count does not depend on it.
    from jax._src.interpreters import partial_eval

    monkeypatch.setattr(partial_eval.DynamicJaxprTracer, "_origin_msg", lambda self: "", False)
    abstract = nnx.eval_shape(lambda: models.create(rngs=nnx.Rngs(0), **models.PRESETS[preset]))
    n = models.count_params(models.split(abstract)[1])
    print(f"{preset}: {n:,} parameters ({n / 1e6:.2f}M)")
    assert n == EXACT[preset]
    if preset in PUBLISHED:
        assert n == pytest.approx(PUBLISHED[preset], rel=0.01)
