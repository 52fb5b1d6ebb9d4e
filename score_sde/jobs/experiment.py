"""An experiment built from a validated config: SDE, model, data, loss and sampler, wired once.

The trainer, the evaluator and the sampler all go through ``Experiment`` so that they agree on
the data scaling, the model call and the sampling options.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.tree_util import Partial

from score_sde import datasets, likelihood, losses, models, sampling
from score_sde import rng as rng_lib
from score_sde.control import guidance
from score_sde.jobs.config import (
    ConfigError,
    ExperimentConfig,
    make_sde,
    model_kwargs,
    sampling_kwargs,
)
from score_sde.jobs.validation import loss_options
from score_sde.parameterization import network_output, to_score
from score_sde.sde import SDE

Array = jax.Array
SNAPSHOT_SAMPLES = 64  # images in a snapshot grid


STREAMS = {"train": 0, "eval_loss": 1, "sample": 2, "bpd": 3, "metrics": 4, "fid": 5}


def stream_key(base: Array, stream: str, step: int | Array) -> Array:
    """The key of ``stream`` at ``step``: fold_in(fold_in(base, stream id), step). Every random
    draw of a run comes from one of these, so a run is a function of its seed."""
    return jax.random.fold_in(jax.random.fold_in(base, STREAMS[stream]), step)


def keyed_batch(
    prepare_batch: Callable[[dict, Array], tuple[Array, Array | None]],
    rng: Array,
    stream: str,
    step: int | Array,
    batch: dict,
) -> tuple[Array, Array | None, Array]:
    """(x, y, key) of ``batch``: the key of ``stream`` at ``step`` from the run's key data
    ``rng``, split into the data draw of ``prepare_batch`` and the ``key`` left for the loss.
    The train step, the eval loss and the eval job's metrics all start so."""
    key = stream_key(jax.random.wrap_key_data(rng), stream, step)
    data_key, key = jax.random.split(key)
    x, y = prepare_batch(batch, data_key)
    return x, y, key


def config_to_json(cfg: ExperimentConfig) -> dict:
    """The config as JSON-able nested dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def init_model(name: str, seed: int, **kwargs) -> tuple[Any, Any, Any]:
    """(graphdef, params, rest) of model ``name``, initialised as one compiled program (not an
    eager op per layer). The model is traced once: the graph definition, static, is kept from
    that trace. On CPU the program is compiled without XLA's expensive optimisations: it runs
    once, and a U-Net's initialisation compiles 3x faster."""
    graphdef = []

    def build():
        g, params, rest = models.split(models.create(name, nnx.Rngs(seed), **kwargs))
        graphdef.append(g)
        return params, rest

    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
    params, rest = jax.jit(build).lower().compile(compiler_options=options)()
    return graphdef[0], params, rest


@dataclasses.dataclass(frozen=True)
class Guide:
    """Classifier guidance for sampling: a noise-conditional classifier's ``logits_fn(x, t)``
    over ``num_classes`` classes, and the scale of its gradient."""

    logits_fn: Partial
    num_classes: int
    scale: float


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """Everything static about a run, plus the freshly initialised model variables."""

    cfg: ExperimentConfig
    sde: SDE
    graphdef: Any
    params: Any  # trainable variables at initialisation
    rest: Any  # non-trainable variables (outside optimiser and EMA)
    data_shape: tuple[int, ...]  # one example's shape
    num_classes: int

    @classmethod
    def create(cls, cfg: ExperimentConfig) -> Experiment:
        d = cfg.data
        shape, _, num_classes = datasets.dataset_info(
            d.dataset, image_size=d.image_size, channels=d.num_channels, data_dir=d.data_dir
        )
        check_eval_split(cfg)
        wanted = cfg.model.num_classes
        if wanted and wanted != num_classes:
            raise ConfigError(
                f"config.model.num_classes={wanted}, but data set {d.dataset!r} has "
                f"{num_classes or 'no'} classes: set config.model.num_classes={num_classes}."
            )
        try:  # the model's own checks, named by the config path
            graphdef, params, rest = init_model(
                cfg.model.name, cfg.seed, **model_kwargs(cfg, shape)
            )
        except ValueError as err:
            raise ConfigError(f"config.model (name={cfg.model.name!r}): {err}") from None
        return cls(cfg, make_sde(cfg), graphdef, params, rest, tuple(shape), num_classes)

    @property
    def classifier(self) -> bool:
        """The model is a noise-conditional classifier (logits), not a score model."""
        return self.cfg.model.name in models.CLASSIFIERS

    @property
    def conditional(self) -> bool:
        """The model is a class-conditional score model."""
        return self.cfg.model.num_classes > 0 and not self.classifier

    @property
    def param_count(self) -> int:
        return int(models.count_params(self.params))

    def describe(self, mesh) -> str:
        rest = sum(math.prod(a.shape) for a in jax.tree.leaves(self.rest))
        return (
            f"Model {self.cfg.model.name}: {self.param_count:,} trainable parameters "
            f"({rest:,} fixed); SDE {type(self.sde).__name__}; data {self.cfg.data.dataset} "
            f"{self.data_shape}; global batch {self.cfg.training.batch_size} on "
            f"{mesh.devices.size} device(s), {jax.process_count()} process(es)."
        )

    # --- data ----------------------------------------------------------------------------
    def data_iterator(self, split: str, *, batch_size: int | None = None, repeat: bool = True):
        """A checkpointable iterator over this process's share of ``split``: batches of
        (global batch / process count). ``repeat``: shuffled and endless (training) when
        ``split`` is "train", else one ordered pass with a padded last batch."""
        d, tc = self.cfg.data, self.cfg.training
        train = split == "train" and repeat
        global_batch = batch_size or (tc.batch_size if train else self.cfg.eval.batch_size)
        ds = datasets.get_dataset(
            d.dataset,
            split=split,
            batch_size=global_batch // jax.process_count(),
            image_size=d.image_size,
            channels=d.num_channels,
            seed=self.cfg.seed,
            data_dir=d.data_dir,
            shuffle=train,
            repeat=repeat,
            random_flip=train and d.random_flip,
        )
        return iter(ds)

    def scaler(self, x: Array) -> Array:
        return datasets.get_data_scaler(self.cfg.data.centered)(x)

    def inverse_scaler(self, x: Array) -> Array:
        return datasets.get_data_inverse_scaler(self.cfg.data.centered)(x)

    def prepare_batch(self, batch: dict, rng: Array) -> tuple[Array, Array | None]:
        """(scaled x, labels or None). With ``data.uniform_dequantization``, 8-bit images get
        uniform noise within their pixel level first (``likelihood.uniform_dequantize``), so
        the model learns a density whose bits/dim is meaningful; with
        ``training.label_dropout`` p a label is replaced by the null class ``num_classes`` with
        probability p (classifier-free guidance)."""
        deq_key, drop_key = jax.random.split(rng)
        x = batch["x"]
        if self.cfg.data.uniform_dequantization and len(self.data_shape) == 3:
            x = likelihood.uniform_dequantize(deq_key, x, data_range=(0.0, 1.0))
        x = self.scaler(x)
        if self.cfg.model.num_classes == 0:
            return x, None
        y = batch["label"]
        p = self.cfg.training.label_dropout
        if p > 0:
            drop = rng_lib.uniform_scalars(drop_key, y.shape[0]) < p
            y = jnp.where(drop, self.cfg.model.num_classes, y)
        return x, y

    # --- the network as a function -------------------------------------------------------
    def model_output(self, params, rest, x, t, y=None, *, train=False, rng=None) -> Array:
        """The network's output at (x, t) (computed in ``training.compute_dtype``: the model's
        ``dtype``; parameters stay float32)."""
        network = lambda x_in, sigma: models.apply(
            self.graphdef, params, rest, x_in, t, sigma, y, train=train, rng=rng
        )
        model = self.cfg.model
        return network_output(
            self.sde, model.parameterization, network, x, t, sigma_data=model.sigma_data
        )

    def loss_builder(self, *, train: bool, per_example: bool = False):
        """rest -> ``loss_fn(rng, params, x, y)``, the configured training objective (the
        batch mean, or per-example losses [B] with ``per_example``)."""

        def build(rest):
            def model_fn(params, x, t, y, rng):
                return self.model_output(params, rest, x, t, y, train=train, rng=rng)

            return losses.get_loss_fn(
                self.sde,
                model_fn,
                per_example=per_example,
                classifier=self.classifier,
                **loss_options(self.cfg),
            )

        return build

    def _score(self, params, rest, x, t, y=None):
        out = self.model_output(params, rest, x, t, y)
        return to_score(self.sde, out, x, t, self.cfg.model.parameterization)

    def score_fn(self, params, rest, y: Array | None = None) -> Partial:
        """score_fn(x, t) over ``params``: a Partial, so new params reuse compiled samplers.
        A class-conditional model's is score_fn(x, t, y) (y=None: the null label), or
        score_fn(x, t) for the labels ``y`` [B] when given."""
        score_fn = Partial(self._score, params, rest)
        return score_fn if y is None else guidance.with_label(score_fn, y)

    def logits_fn(self, params, rest) -> Partial:
        """A classifier's logits_fn(x, t) -> [B, num_classes] (``control.classifier_guidance``)."""
        return Partial(self.model_output, params, rest)

    def guided_score_fn(self, params, rest, y: Array) -> Partial:
        """The sampling score of a class-conditional model for labels y [B]: conditional, or
        with classifier-free guidance at ``sampling.guidance_scale`` != 1."""
        scale = self.cfg.sampling.guidance_scale
        if scale == 1:
            return self.score_fn(params, rest, y)
        null = self.cfg.model.num_classes  # the label-dropout id
        return guidance.classifier_free_guidance(self.score_fn(params, rest), y, null, scale)

    # --- sampling ------------------------------------------------------------------------
    def sample_labels(self, start: int, n: int, guide: Guide | None = None) -> np.ndarray | None:
        """Labels of samples start..start+n-1 of a class-conditional model, or under classifier
        guidance: the classes in turn (a grid's rows run through them); None otherwise."""
        if self.conditional:
            classes = self.cfg.model.num_classes
        elif guide is not None:
            classes = guide.num_classes
        else:
            return None
        return (np.arange(start, start + n) % classes).astype(np.int32)

    def draw(self, params, rest, rng: Array, y: Array | None, n: int, guide=None) -> Array:
        """``n`` samples in data space as a device array (jit-able; images clipped to [0, 1]),
        of labels ``y`` [n] for a class-conditional model or a classifier ``guide``."""
        return self.to_data(self.draw_raw(params, rest, rng, y, n, guide))

    def draw_raw(
        self, params, rest, rng: Array, y: Array | None, n: int, guide=None, *,
        on_nonfinite: str = "warn",
    ) -> Array:  # fmt: skip
        """``draw``'s samples in the model's space, before ``to_data``; ``on_nonfinite`` as for
        ``sampling.sample``."""
        if self.conditional:
            score_fn = self.guided_score_fn(params, rest, y)
        else:
            score_fn = self.score_fn(params, rest)
        if guide is not None:
            score_fn = guidance.classifier_guidance(score_fn, guide.logits_fn, y, guide.scale)
        x, _ = sampling.sample(
            rng,
            self.sde,
            score_fn,
            (n, *self.data_shape),
            method=self.cfg.sampling.method,
            on_nonfinite=on_nonfinite,
            **sampling_kwargs(self.cfg),
        )
        return x

    def to_data(self, x: Array) -> Array:
        """Samples in the model's space to data space (images clipped to [0, 1])."""
        x = self.inverse_scaler(x)
        return jnp.clip(x, 0.0, 1.0) if len(self.data_shape) == 3 else x

    def sample(
        self,
        params,
        rest,
        rng: Array,
        n: int = SNAPSHOT_SAMPLES,
        *,
        start: int = 0,
        guide: Guide | None = None,
    ) -> np.ndarray:
        """``n`` samples in data space ([0, 1] for images), as a host array; those of a
        class-conditional model, or with a classifier ``guide``, are of labels
        ``sample_labels(start, n, guide)``."""
        y = self.sample_labels(start, n, guide)
        return np.asarray(jax.device_get(self.draw(params, rest, rng, y, n, guide)))


def check_eval_split(cfg: ExperimentConfig) -> None:
    """``eval.bpd_split`` names a split (or a slice of one) of the data set: the eval loss
    during training and the eval job read it. A set not prepared on this machine is told later,
    by the job that reads it."""
    d = cfg.data
    try:
        datasets.dataset_info(
            d.dataset, split=cfg.eval.bpd_split, image_size=d.image_size,
            channels=d.num_channels, data_dir=d.data_dir,
        )  # fmt: skip
    except datasets.DatasetNotPreparedError:
        pass
    except ValueError as err:
        raise ConfigError(f"config.eval.bpd_split={cfg.eval.bpd_split!r}: {err}") from None
