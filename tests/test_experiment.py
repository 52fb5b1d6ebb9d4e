"""The experiment wiring (score_sde.jobs.experiment): the run's random streams, batch
preparation, and the labels of a conditional model's samples."""

import chex
import jax
import numpy as np
import pytest
from helpers import config_dict

from score_sde.jobs import experiment as experiment_lib
from score_sde.jobs.validation import from_config_dict


def test_stream_keys_differ_by_stream_and_step_and_repeat_exactly():
    """Every draw of a run comes from (seed, stream, step): the same triple gives the same key,
    another stream or step another one."""
    base = jax.random.key(0)
    data = lambda stream, step: tuple(
        np.asarray(jax.random.key_data(experiment_lib.stream_key(base, stream, step)))
    )
    keys = {(s, t): data(s, t) for s in experiment_lib.STREAMS for t in (0, 1, 7)}
    assert len(set(keys.values())) == len(keys)
    assert data("sample", 7) == keys["sample", 7]


def test_keyed_batch_draws_the_data_and_the_loss_key_from_the_stream():
    """(x, y, key): the data draw and the loss key are the two halves of the stream's key."""
    seen = {}

    def prepare(batch, key):
        seen["key"] = key
        return batch["x"] + 1, None

    rng = jax.random.key_data(jax.random.key(5))
    x, y, key = experiment_lib.keyed_batch(prepare, rng, "train", 3, {"x": np.zeros(2)})
    data_key, loss_key = jax.random.split(experiment_lib.stream_key(jax.random.key(5), "train", 3))
    np.testing.assert_array_equal(x, np.ones(2))
    assert y is None
    np.testing.assert_array_equal(jax.random.key_data(seen["key"]), jax.random.key_data(data_key))
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(loss_key))


def test_a_conditional_model_samples_the_classes_in_turn():
    cond = experiment_lib.Experiment.create(
        from_config_dict(config_dict("toy/ring8_cond.py", {"model.width": 8}), device_count=1)
    )
    np.testing.assert_array_equal(cond.sample_labels(6, 5), [6, 7, 0, 1, 2])
    plain = experiment_lib.Experiment.create(
        from_config_dict(config_dict("toy/ring8_vp.py", {"model.width": 8}), device_count=1)
    )
    assert plain.sample_labels(0, 4) is None
    guide = experiment_lib.Guide(logits_fn=None, num_classes=3, scale=1.0)
    np.testing.assert_array_equal(plain.sample_labels(0, 4, guide), [0, 1, 2, 0])


@pytest.mark.parametrize("dequantize", [False, True])
def test_uniform_dequantization_noises_each_pixel_within_its_level(dequantize):
    """data.uniform_dequantization: the model sees (255 x + u) / 256, u ~ U[0, 1), scaled to
    [-1, 1]; without it, exactly the 8-bit levels."""
    small = {"model.nf": 8, "model.ch_mult": (1, 2), "model.attn_resolutions": ()}
    cfg = config_dict("digits.py", {**small, "data.uniform_dequantization": dequantize})
    exp = experiment_lib.Experiment.create(from_config_dict(cfg, device_count=1))
    batch = next(exp.data_iterator("train", batch_size=16))
    x, y = exp.prepare_batch(batch, jax.random.key(3))
    assert y is None
    chex.assert_shape(x, (16, 16, 16, 1))
    levels = np.round(np.asarray(batch["x"]) * 255)
    u = (np.asarray(x, np.float64) + 1) / 2 * 256 - levels  # the noise within the level
    if dequantize:
        assert u.min() >= -1e-4 and u.max() < 1 + 1e-4
        assert abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 1 / 12) < 0.01
    else:
        np.testing.assert_allclose(u, levels / 255, atol=1e-4)  # 256 k/255 - k = k/255


def test_a_model_build_error_names_the_config_field(monkeypatch):
    """The model's own ValueError at start-up comes back under config.model, not as a
    traceback from inside the constructor."""
    from score_sde import models
    from score_sde.jobs.config import ConfigError

    cfg = from_config_dict(config_dict("toy/ring8_vp.py", {"model.width": 8}), device_count=1)

    def refuses(**options):
        raise ValueError(f"width={options['width']}: too narrow")

    monkeypatch.setitem(models.MODELS, cfg.model.name, refuses)
    with pytest.raises(ConfigError, match=r"^config\.model \(name='mlp'\): width=8: too narrow"):
        experiment_lib.Experiment.create(cfg)


def test_the_edm_parameterization_preconditions_the_network(monkeypatch):
    """model.parameterization="edm": the network F sees c_in x/alpha and sigma/alpha, and the
    output is D = c_skip x/alpha + c_out F with config.model.sigma_data (Karras et al., Eq. 7)."""
    overrides = {"model.width": 8, "model.parameterization": "edm", "model.sigma_data": 0.7}
    exp = experiment_lib.Experiment.create(
        from_config_dict(config_dict("toy/ring8_vp.py", overrides), device_count=1)
    )
    seen = {}

    def network(graphdef, params, rest, x, t, sigma, y=None, *, train=False, rng=None):
        seen.update(x=x, sigma=sigma)
        return 2 * x

    monkeypatch.setattr(experiment_lib.models, "apply", network)
    x = jax.random.normal(jax.random.key(0), (4, 2))
    t = jax.numpy.asarray([0.05, 0.3, 0.6, 1.0])
    a, s = exp.sde.alpha(t)[:, None], exp.sde.marginal_std(t)[:, None]
    sigma = s / a
    c_skip, c_in = 0.49 / (sigma**2 + 0.49), 1 / jax.numpy.sqrt(sigma**2 + 0.49)
    c_out = sigma * 0.7 * c_in
    out = exp.model_output(None, None, x, t)
    chex.assert_trees_all_close(seen, {"x": c_in * x / a, "sigma": sigma[:, 0]}, rtol=1e-6)
    chex.assert_trees_all_close(out, c_skip * x / a + c_out * 2 * c_in * x / a, rtol=1e-6)
