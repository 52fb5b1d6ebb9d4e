"""Configs: every file under configs/ loads and validates; each invalid config fails with one
line naming the field; the paper's CIFAR-10 hyper-parameters are the ones in the files."""

import dataclasses
import importlib
import pathlib

import chex
import jax
import jax.numpy as jnp
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from score_sde import datasets, models, sampling
from score_sde.jobs import config as config_lib
from score_sde.jobs.config import ConfigError
from score_sde.jobs.validation import from_config_dict

# ml_collections loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "configs").rglob("*.py")
    if "def get_config(" in p.read_text()
)


@pytest.fixture(autouse=True)
def _repo_root_on_path(monkeypatch):
    """Config files import ``configs.default_*``, as under ``python -m`` from the repo root."""
    monkeypatch.syspath_prepend(str(ROOT))


def _load(path: str):
    return importlib.import_module(path[:-3].replace("/", ".")).get_config()


def test_config_files_found():
    assert len(CONFIG_FILES) >= 14, CONFIG_FILES
    for name in ("vp/cifar10_ddpmpp_continuous.py", "ve/cifar10_ncsnpp_deep_continuous.py"):
        assert f"configs/{name}" in CONFIG_FILES


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_config_file_loads_and_validates(path):
    exp = from_config_dict(_load(path), device_count=8)
    sde = config_lib.make_sde(exp)
    assert type(sde) is config_lib.SDES[exp.sde.name]
    assert sde.N == exp.sde.N


# The paper's CIFAR-10 models (Song et al. 2021, Table 3 and App. H): SDE, depth, EMA, embedding.
PAPER = {
    "vp/cifar10_ddpmpp_continuous.py": ("vpsde", 4, 0.9999, "positional", 1_300_001),
    "vp/cifar10_ddpmpp_deep_continuous.py": ("vpsde", 8, 0.9999, "positional", 950_001),
    "subvp/cifar10_ddpmpp_continuous.py": ("subvpsde", 4, 0.9999, "positional", 1_300_001),
    "subvp/cifar10_ddpmpp_deep_continuous.py": ("subvpsde", 8, 0.9999, "positional", 950_001),
    "ve/cifar10_ncsnpp_continuous.py": ("vesde", 4, 0.999, "fourier", 1_300_001),
    "ve/cifar10_ncsnpp_deep_continuous.py": ("vesde", 8, 0.999, "fourier", 950_001),
    "vp/cifar10_ddpm.py": ("vpsde", 2, 0.9999, "positional", 1_300_001),
}


@pytest.mark.parametrize("path", sorted(PAPER))
def test_paper_hyperparameters(path):
    exp = from_config_dict(_load(f"configs/{path}"), device_count=1)
    sde, blocks, ema, embedding, n_iters = PAPER[path]
    t, m, o, d, s = exp.training, exp.model, exp.optim, exp.data, exp.sde
    assert (s.name, m.num_res_blocks, m.ema_rate, m.embedding_type) == (sde, blocks, ema, embedding)
    assert (t.n_iters, t.batch_size, t.continuous) == (n_iters, 128, path != "vp/cifar10_ddpm.py")
    assert (o.optimizer, o.lr, o.beta1, o.eps, o.warmup, o.grad_clip) == (
        "Adam",
        2e-4,
        0.9,
        1e-8,
        5000,
        1.0,
    )
    assert (m.nf, m.ch_mult, m.attn_resolutions, m.dropout) == (128, (1, 2, 2, 2), (16,), 0.1)
    assert (d.dataset, d.image_size, d.num_channels, d.random_flip) == ("cifar10", 32, 3, True)
    assert (s.N, s.beta_min, s.beta_max, s.schedule) == (1000, 0.1, 20.0, "linear")
    assert (s.sigma_min, s.sigma_max) == (0.01, 50.0)
    vp = sde != "vesde"
    # VP-type models predict the noise and see centred data; NCSN++ divides its output by sigma.
    assert d.centered is vp and m.scale_by_sigma is not vp
    assert m.parameterization == ("eps" if vp else "score")
    assert t.reduce_mean is vp
    if m.name == "ncsnpp":
        assert (m.fir, m.progressive_input) == ((True, "residual") if not vp else (False, "none"))
        assert (m.resblock_type, m.skip_rescale, m.init_scale) == ("biggan", True, 0.0)


# --- the invalid-config catalogue: one case each, the message names the field -------------
def _digits(**overrides):
    """The offline default config with ``overrides`` ({"section.field": value}) applied."""
    cfg = _load("configs/digits.py")
    for key, value in overrides.items():
        section, field = key.split(".")
        setattr(cfg[section], field, value)
    return cfg


def _fails(cfg, *needles, device_count=1):
    with pytest.raises(ConfigError) as info:
        from_config_dict(cfg, device_count=device_count)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_unknown_key_in_config_file(tmp_path):
    (tmp_path / "typo_config.py").write_text(
        "from score_sde.jobs.config import to_config_dict\n\n\n"
        "def get_config():\n"
        "    config = to_config_dict()\n"
        "    config.training.n_itres = 2000\n"
        "    return config\n"
    )
    cfg = _parse_flags(f"--config={tmp_path / 'typo_config.py'}")
    _fails(cfg, "config.training.n_itres", "did you mean 'n_iters'")


def test_unknown_section():
    cfg = _digits()
    cfg.trainig = {"batch_size": 8}
    _fails(cfg, "config.trainig", "did you mean 'training'")


def test_wrong_type():
    cfg = dataclasses.asdict(from_config_dict(_digits(), device_count=1))
    cfg["training"]["n_iters"] = "2000"
    _fails(cfg, "config.training.n_iters='2000'", "int")


def test_wrong_type_bool_for_int():
    cfg = dataclasses.asdict(from_config_dict(_digits(), device_count=1))
    cfg["model"]["num_res_blocks"] = True
    _fails(cfg, "config.model.num_res_blocks", "int")


def test_wrong_type_in_tuple():
    _fails(_digits(**{"model.ch_mult": (1, "2")}), "config.model.ch_mult[1]", "int")


def test_beta_max_not_above_beta_min():
    _fails(_digits(**{"sde.beta_max": 0.1}), "config.sde (name='vpsde')", "beta_max=0.1")


def test_sigma_min_not_positive():
    _fails(_digits(**{"sde.name": "vesde", "sde.sigma_min": 0.0}), "config.sde", "sigma_min=0.0")


def test_sigma_min_not_below_sigma_max():
    _fails(
        _digits(**{"sde.name": "vesde", "sde.sigma_min": 60.0}),
        "config.sde (name='vesde')",
        "0 < sigma_min < sigma_max, got sigma_min=60.0",
    )


def test_num_scales_below_one():
    _fails(_digits(**{"sde.N": 0}), "config.sde (name='vpsde')", "N=0", "N >= 1")


def test_batch_not_divisible_by_device_count():
    _fails(_digits(), "config.training.batch_size=64", "device count (3)", device_count=3)


def test_eval_batch_not_divisible_by_device_count():
    _fails(_digits(**{"eval.batch_size": 100}), "config.eval.batch_size=100", device_count=8)


def test_image_size_not_divisible_by_downsampling():
    _fails(_digits(**{"data.image_size": 18}), "config.data.image_size=18", "divisible by")


def test_unet_shape_errors_come_from_the_model_s_geometry():
    _fails(_digits(**{"model.ch_mult": ()}), "config.model.ch_mult=()", "one entry per")
    _fails(_digits(**{"model.nf": 2}), "config.model.nf=2", "GroupNorm")


def test_attention_resolution_not_reachable():
    _fails(_digits(**{"model.attn_resolutions": (6,)}), "config.model.attn_resolutions", "16, 8, 4")


def test_unknown_sde_lists_valid_names():
    _fails(_digits(**{"sde.name": "vp"}), "config.sde.name='vp'", "subvpsde, vesde, vpsde")


def test_unknown_model_lists_valid_names():
    _fails(
        _digits(**{"model.name": "unet"}), "config.model.name='unet'", "mlp, mlp_classifier, ncsnpp"
    )


def test_unknown_dataset_lists_valid_names():
    _fails(_digits(**{"data.dataset": "digit"}), "config.data.dataset='digit'", "digits")


def test_unknown_sampler_lists_valid_names():
    _fails(_digits(**{"sampling.method": "langevin"}), "config.sampling.method", "ancestral, ddim")


def test_unknown_predictor_lists_valid_names():
    _fails(
        _digits(**{"sampling.predictor": "heun"}), "config.sampling.predictor", "reverse_diffusion"
    )


def test_sampler_option_the_method_lacks():
    cfg = _digits(**{"sampling.method": "ode"})
    cfg.sampling.options = {"eta": 0.5}
    _fails(cfg, "config.sampling.options has 'eta'", "method='ode'", "rtol")


@pytest.mark.parametrize("method", sorted(sampling.METHODS))
@pytest.mark.parametrize("path", ["configs/digits.py", "configs/toy/ring8_vp.py"])
def test_every_method_can_be_chosen_by_sampling_method_alone(path, method):
    """The config's other sampling fields (pc's predictor and corrector among them) are no
    obstacle to another method: with only ``sampling.method`` changed the config validates."""
    cfg = _load(path)
    cfg.sampling.method = method
    exp = from_config_dict(cfg, device_count=1)
    assert set(config_lib.sampling_kwargs(exp)) <= set(sampling.method_options(method))


def test_unknown_embedding_type():
    _fails(
        _digits(**{"model.embedding_type": "sinusoidal"}), "config.model.embedding_type", "fourier"
    )


def test_fields_of_one_implemented_value_are_gone():
    """yang-song/score_sde's normalization, nonlinearity, ... have one value here: no field."""
    _fails(_digits(**{"model.normalization": "GroupNorm"}), "config.model.normalization is not")
    _fails(_digits(**{"model.num_scales": 1000}), "config.model.num_scales is not")


def test_num_channels_unsupported():
    _fails(_digits(**{"data.num_channels": 2}), "config.data.num_channels=2", "1, 3")


def test_label_dropout_needs_classes():
    _fails(
        _digits(**{"training.label_dropout": 0.1}), "config.training.label_dropout", "num_classes"
    )


def test_classifier_needs_classes():
    _fails(_digits(**{"model.name": "classifier"}), "config.model.num_classes", "classifier")


def test_guidance_scale_needs_label_dropout():
    cond = {"model.num_classes": 10, "sampling.guidance_scale": 2.0}
    _fails(_digits(**cond), "config.sampling.guidance_scale=2.0", "label_dropout > 0")
    from_config_dict(_digits(**cond, **{"training.label_dropout": 0.1}), device_count=1)


@pytest.mark.parametrize(
    "field, value",
    [
        ("training.snapshot_sampling", True),
        ("eval.enable_bpd", True),
        ("eval.enable_sampling", True),
        ("training.continuous", False),
        ("training.likelihood_weighting", True),
        ("training.label_dropout", 0.1),
        ("model.scale_by_sigma", True),
        ("sampling.classifier_workdir", "runs/other"),
    ],
)
def test_classifier_config_rejects_score_model_options(field, value):
    cfg = _load("configs/digits_classifier.py")
    from_config_dict(cfg, device_count=1)
    section, name = field.split(".")
    setattr(cfg[section], name, value)
    _fails(cfg, f"config.{field}={value}", "classifier")


def test_classifier_scale_must_not_be_negative():
    _fails(_digits(**{"sampling.classifier_scale": -1.0}), "config.sampling.classifier_scale=-1.0")


def test_num_classes_must_match_the_data():
    from score_sde.jobs.experiment import Experiment

    cfg = from_config_dict(_load("configs/toy/ring8_cond.py"), device_count=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=5))
    with pytest.raises(ConfigError, match=r"num_classes=5.*'ring8' has 8 classes.*=8"):
        Experiment.create(cfg)


def test_unknown_schedule():
    _fails(_digits(**{"sde.schedule": "quadratic"}), "config.sde", "schedule='quadratic'", "cosine")


def test_unknown_parameterization():
    _fails(_digits(**{"model.parameterization": "w"}), "config.model.parameterization", "eps")


@pytest.mark.parametrize(
    "overrides, needles",
    [
        ({"training.min_snr_gamma": -1.0}, ["config.training.min_snr_gamma=-1.0", ">= 0"]),
        ({"training.min_snr_gamma": 5.0, "training.likelihood_weighting": True},
         ["config.training.likelihood_weighting=True", "choose one loss weighting"]),
        ({"training.edm_loss": True, "training.min_snr_gamma": 5.0},
         ["config.training.min_snr_gamma=5.0 and edm_loss=True", "choose one"]),
        ({"training.edm_loss": True, "training.continuous": False},
         ["config.training.edm_loss=True", "continuous=True"]),
        ({"training.p_std": 0.0}, ["config.training.p_std=0.0", "> 0"]),
        ({"model.sigma_data": 0.0}, ["config.model.sigma_data=0.0", "> 0"]),
        ({"model.parameterization": "edm", "model.scale_by_sigma": True},
         ["config.model.scale_by_sigma=True", "scale_by_sigma=False"]),
        ({"model.parameterization": "edm", "training.continuous": False},
         ["config.model.parameterization='edm'", "continuous=True"]),
        ({"sampling.thresholding": "dynamic", "data.centered": False},
         ["config.sampling.thresholding='dynamic'", "centered=True"]),
        ({"sampling.thresholding": "soft"}, ["config.sampling.thresholding='soft'", "dynamic"]),
        ({"sampling.threshold_percentile": 1.5}, ["config.sampling.threshold_percentile=1.5"]),
        ({"training.min_snr_gamma": 5.0, "model.name": "classifier", "model.num_classes": 10,
          "training.snapshot_sampling": False, "eval.enable_bpd": False,
          "eval.enable_sampling": False}, ["config.training.min_snr_gamma=5.0", "classifier"]),
    ],
)  # fmt: skip
def test_recipe_options_that_do_not_fit(overrides, needles):
    _fails(_digits(**overrides), *needles)


def test_edm_cifar10_has_the_paper_s_hyperparameters():
    """EDM's CIFAR-10 "config F" (Karras et al. 2022, Table 7 and App. F.1): DDPM++ 128 x
    (2, 2, 2) with 4 blocks, dropout 0.13, batch 512, 200 Mimg, lr 1e-3 after a 10 Mimg ramp,
    EMA half-life 0.5 Mimg, ln sigma ~ N(-1.2, 1.2²), sigma_data 0.5, Heun with 18 levels on the
    rho = 7 grid over sigma in [0.002, 80]."""
    exp = from_config_dict(_load("configs/edm/cifar10_ddpmpp_edm.py"), device_count=1)
    t, m, o, s, sc = exp.training, exp.model, exp.optim, exp.sde, exp.sampling
    assert (s.name, s.sigma_min, s.sigma_max) == ("vesde", 0.002, 80.0)
    assert (m.parameterization, m.sigma_data, t.edm_loss, t.p_mean, t.p_std) == (
        "edm", 0.5, True, -1.2, 1.2
    )  # fmt: skip
    assert (m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.dropout) == (
        128, (2, 2, 2), 4, (16,), 0.13
    )  # fmt: skip
    assert (t.batch_size, t.n_iters * t.batch_size, o.lr, o.warmup * t.batch_size) == (
        512, 200_000_000, 1e-3, 9_999_872
    )  # fmt: skip
    assert abs(m.ema_rate ** (500_000 / 512) - 0.5) < 1e-3
    assert (sc.method, sc.n_steps, dict(sc.options)) == (
        "heun",
        18,
        {"time_grid": "edm", "rho": 7.0},
    )
    options = {k: getattr(m, k) for k in models.OPTIONS["ncsnpp"] if hasattr(m, k)}
    options.update(image_size=32, in_channels=3)
    net = nnx.eval_shape(lambda: models.create("ncsnpp", rngs=nnx.Rngs(0), **options))
    assert round(models.count_params(nnx.state(net, nnx.Param)) / 1e6, 1) == 55.7  # EDM's DDPM++


def test_unknown_compute_dtype():
    _fails(
        _digits(**{"training.compute_dtype": "fp16"}), "config.training.compute_dtype", "bfloat16"
    )


def test_unknown_optimizer():
    _fails(_digits(**{"optim.optimizer": "SGD"}), "config.optim.optimizer='SGD'", "Adam")


def test_importance_sampling_needs_likelihood_weighting():
    cfg = _digits(**{"training.importance_sampling": True})
    _fails(cfg, "config.training.importance_sampling", "likelihood_weighting=True")


def test_discrete_loss_needs_a_discrete_chain():
    cfg = _digits(**{"training.continuous": False, "sde.name": "subvpsde"})
    _fails(cfg, "config.training.continuous=False", "subvpsde")


def test_freq_not_multiple_of_jitted_steps():
    _fails(_digits(**{"training.log_freq": 55}), "config.training.log_freq=55", "n_jitted_steps")


def test_ema_rate_not_below_one():
    _fails(_digits(**{"model.ema_rate": 1.0}), "config.model.ema_rate=1.0", "[0, 1)")


def test_lr_not_positive():
    _fails(_digits(**{"optim.lr": 0.0}), "config.optim.lr=0.0", "> 0")


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("num_fid_samples", 5, "must be 0 (off) or >= 10"),
        ("fid_reference_size", 3, "must be 0 (the whole split) or >= 10"),
        ("fid_subsample", 0, "fid_subsample=0 must be >= 10"),
    ],
)
def test_image_metric_sizes(field, value, needle):
    _fails(_digits(**{f"eval.{field}": value}), f"config.eval.{field}={value}", needle)
    from_config_dict(_digits(**{f"eval.{field}": 10}), device_count=1)


def test_eval_checkpoint_range_reversed():
    cfg = _digits(**{"eval.begin_ckpt": 10, "eval.end_ckpt": 5})
    _fails(cfg, "config.eval.end_ckpt=5", "config.eval.begin_ckpt=10")


# --- ml_collections lock and round trips -----------------------------------------------------
def _parse_flags(*args):
    argv = ["prog", *args]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", lock_config=True, flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config


def test_typo_in_command_line_override_fails():
    path = str(ROOT / "configs" / "digits.py")
    with pytest.raises(AttributeError, match='Did you mean "n_iters"'):
        _parse_flags(f"--config={path}", "--config.training.n_itres=5")
    cfg = _parse_flags(
        f"--config={path}", "--config.training.n_iters=5", "--config.sampling.n_steps=7"
    )
    exp = from_config_dict(cfg, device_count=1)
    assert (exp.training.n_iters, exp.sampling.n_steps) == (5, 7)
    with pytest.raises(AttributeError, match="n_itres"):
        cfg.training.n_itres = 5


def test_digits_begin_ckpt_follows_n_iters_and_overrides_alone():
    path = str(ROOT / "configs" / "digits.py")
    cfg = _parse_flags(f"--config={path}", "--config.training.n_iters=40")
    assert cfg.eval.begin_ckpt == 40
    cfg = _parse_flags(f"--config={path}", "--config.eval.begin_ckpt=0")
    assert (cfg.eval.begin_ckpt, cfg.training.n_iters) == (0, 1500)


def test_round_trips():
    exp = from_config_dict(_load("configs/ve/cifar10_ncsnpp_continuous.py"), device_count=1)
    assert from_config_dict(dataclasses.asdict(exp), device_count=1) == exp
    assert from_config_dict(config_lib.to_config_dict(exp), device_count=1) == exp
    assert (
        from_config_dict(config_lib.to_config_dict(), device_count=1)
        == config_lib.ExperimentConfig()
    )


# The options dataclass each model's keywords build (DDPM's: NCSN++'s with DDPM's settings).
OPTION_TYPES = {
    "mlp": models.MLPOptions,
    "ncsnpp": models.NCSNppOptions,
    "ddpm": models.NCSNppOptions,
    "classifier": models.UNetOptions,
    "mlp_classifier": models.MLPOptions,
    "dit": models.DiTOptions,
}


def _shape(exp):
    d = exp.data
    if d.image_size is None:
        return datasets.dataset_info(d.dataset).shape
    return (d.image_size, d.image_size, d.num_channels)


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_model_and_sampler_kwargs_bind(path):
    """The kwargs match the constructor and the sampler exactly (no unknown, none missing)."""
    exp = from_config_dict(_load(path), device_count=1)
    kwargs = config_lib.model_kwargs(exp, _shape(exp))
    assert set(kwargs) <= set(models.OPTIONS[exp.model.name]), kwargs
    OPTION_TYPES[exp.model.name](**kwargs)  # every required option given
    options = config_lib.sampling_kwargs(exp)
    assert set(options) <= set(sampling.method_options(exp.sampling.method)), options


# Config file -> the models' preset of the same paper model (written independently from Song's).
PRESET_OF = {
    "vp/cifar10_ddpmpp_continuous.py": "ddpmpp_cifar10",
    "subvp/cifar10_ddpmpp_deep_continuous.py": "ddpmpp_deep_cifar10",
    "ve/cifar10_ncsnpp_continuous.py": "ncsnpp_cifar10",
    "ve/cifar10_ncsnpp_deep_continuous.py": "ncsnpp_deep_cifar10",
    "vp/cifar10_ddpm.py": "ddpm_cifar10",
}


@pytest.mark.parametrize("path", sorted(PRESET_OF))
def test_model_kwargs_match_the_models_presets(path):
    exp = from_config_dict(_load(f"configs/{path}"), device_count=1)
    preset = dict(models.PRESETS[PRESET_OF[path]])
    assert preset.pop("name") == exp.model.name
    kwargs = config_lib.model_kwargs(exp, (32, 32, 3))
    assert {k: kwargs[k] for k in preset} == preset


@pytest.mark.parametrize("path", ["configs/digits.py", "configs/toy/gmm16_vp.py"])
def test_model_from_kwargs_maps_data_to_data(path):
    """The small configs build a model whose output has the data's shape."""
    exp = from_config_dict(_load(path), device_count=1)
    shape = _shape(exp)
    kwargs = config_lib.model_kwargs(exp, shape)
    model = nnx.eval_shape(lambda: models.create(exp.model.name, nnx.Rngs(0), **kwargs))
    graphdef, params, rest = models.split(model)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    t = jax.ShapeDtypeStruct((2,), jnp.float32)
    out = jax.eval_shape(models.apply, graphdef, params, rest, x, t, t)
    chex.assert_shape(out, (2, *shape))
    print(path, "parameters:", models.count_params(params))


def test_sampling_kwargs_pass_fields_and_options():
    cfg = _digits(**{"sampling.method": "ode", "sampling.eps": 1e-4})
    cfg.sampling.options = {"rtol": 1e-3}
    kwargs = config_lib.sampling_kwargs(from_config_dict(cfg, device_count=1))
    assert kwargs == {"rtol": 1e-3, "eps": 1e-4, "threshold_percentile": 0.995}
    cfg.sampling.thresholding = "dynamic"
    kwargs = config_lib.sampling_kwargs(from_config_dict(cfg, device_count=1))
    assert (kwargs["thresholding"], kwargs["threshold_percentile"]) == ("dynamic", 0.995)
    cfg = _digits(**{"sampling.n_corrector_steps": 2, "sampling.denoise": False})
    kwargs = config_lib.sampling_kwargs(from_config_dict(cfg, device_count=1))
    assert (kwargs["n_corrector_steps"], kwargs["denoise"], kwargs["n_steps"]) == (2, False, 250)


def test_make_sde_takes_the_sde_fields():
    exp = from_config_dict(
        _digits(**{"sde.name": "vesde", "sde.sigma_max": 7.0, "sde.N": 12}),
        device_count=1,
    )
    sde = config_lib.make_sde(exp)
    assert (sde.sigma_min, sde.sigma_max, sde.N) == (0.01, 7.0, 12)
    assert float(sde.marginal_std(1.0)) == pytest.approx(7.0, rel=1e-6)


@pytest.mark.parametrize(
    "field, value",
    [
        ("optim.lr", float("inf")),
        ("model.ema_rate", float("nan")),
        ("sde.beta_max", float("inf")),
        ("training.max_loss_ratio", float("inf")),
        ("sampling.options", {"eta": float("-inf")}),
    ],
)
def test_non_finite_numbers_are_rejected_at_start_up(field, value):
    """lr=inf passed the "> 0" range check and trained to nothing with exit 0."""
    shown = f"config.{field}.eta=-inf" if isinstance(value, dict) else f"config.{field}={value}"
    _fails(_digits(**{field: value}), shown, "must be a finite number")
