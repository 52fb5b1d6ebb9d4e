"""Checks at the library's boundary (``sampling``, ``likelihood``, the SDEs): one clear error that
names the argument and the fix, before any tracing, instead of a deep JAX traceback.

Value checks need concrete values: under ``jax.jit`` an argument may be a tracer, and then only
its shape and dtype are checked. Samples and log-likelihoods that come out non-finite are
reported by ``report_nonfinite`` according to ``on_nonfinite`` (``ON_NONFINITE``).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

ON_NONFINITE = ("warn", "raise", "ignore")


class NonFiniteError(FloatingPointError):
    """Samples or log-likelihoods came out NaN or inf (``on_nonfinite="raise"``)."""


def is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def is_real_number(value) -> bool:
    """A concrete real scalar: a Python or NumPy int or float, or a 0-d NumPy array of one. Not a
    bool (equinox, inside diffrax, rebuilds pytree nodes with True/False leaves), nor a tracer."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def positive(name: str, value) -> None:
    """``value`` is a finite number > 0 (a tolerance, a step size)."""
    if not is_real_number(value):
        raise TypeError(f"{name}={value!r}: pass a positive float, e.g. {name}=1e-5.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r}: need a finite value > 0, e.g. {name}=1e-5.")


def count(name: str, value) -> None:
    """``value`` is an int >= 1 (a number of steps, iterations)."""
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name}={value!r}: need an int >= 1.")


def end_time(name: str, value, T) -> None:
    """``value`` lies in the open interval (0, T): an end time eps of sampling or likelihood."""
    if not is_real_number(value):
        raise TypeError(f"{name}={value!r}: pass a float in (0, T={T}), e.g. {name}=1e-5.")
    if is_real_number(T) and not 0 < value < T:
        raise ValueError(
            f"{name}={value!r}: need 0 < {name} < T={T} (the score is singular at t = 0), "
            f"e.g. {name}=1e-5."
        )


def options(opts: dict, T) -> None:
    """The value checks of options shared by several methods: ``eps`` (when given), ``rtol`` and
    ``atol`` (of the adaptive solvers)."""
    if opts.get("eps") is not None:
        end_time("eps", opts["eps"], T)
    for name in ("rtol", "atol"):
        if name in opts:
            positive(name, opts[name])


def batch_shape(shape, name: str = "shape") -> tuple[int, ...]:
    """``shape`` as a tuple of Python ints, after checking it is (batch, *dims), all > 0."""
    message = f"{name}={shape!r}: pass a non-empty tuple of positive ints (batch, *data dims)"
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{message}, e.g. (16, 2).") from None
    if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{message}, e.g. (16, 2).")
    if not dims or min(dims) < 1:
        raise ValueError(f"{message}, e.g. (16, 2).")
    return tuple(int(d) for d in dims)


def score_output(score_fn: Callable, x, t=None) -> None:
    """``score_fn(x, t)`` has the shape of x, checked by tracing it alone (``jax.eval_shape``: no
    computation); t defaults to one time per example. Works on tracers."""
    x = jax.ShapeDtypeStruct(x.shape, x.dtype)
    t = jax.ShapeDtypeStruct(x.shape[:1], x.dtype) if t is None else t
    out = jax.eval_shape(score_fn, x, t)
    if getattr(out, "shape", None) != x.shape:
        got = f"shape {out.shape}" if hasattr(out, "shape") else f"a {type(out).__name__}"
        raise ValueError(
            f"score_fn returned {got} for x of shape {x.shape} and t of shape {t.shape}: a score "
            "has the shape of x (one value per dimension of each example)."
        )


def data(x) -> None:
    """``x`` is a batch [B, ...] of float32/float64 data, finite where it is concrete."""
    dtype = jnp.dtype(x.dtype)
    if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
        raise TypeError(
            f"x has dtype {dtype}: pass float32 or float64 data, scaled to the model's range "
            "(e.g. 8-bit images as x / 255 for [0, 1], then the data scaler; float16 data as "
            "x.astype(jnp.float32))."
        )
    batch_shape(x.shape, "x.shape")
    if is_traced(x):  # under jit: values unknown
        return
    count, first = _nonfinite(x)
    if int(count):
        raise ValueError(
            f"x has NaN or inf in {int(count)} of {x.shape[0]} examples (the first at index "
            f"{int(first)}): pass finite data."
        )


def on_nonfinite(value: str) -> None:
    if value not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite={value!r} is unknown; use one of {ON_NONFINITE}.")


@jax.jit
def _nonfinite(x) -> tuple[jax.Array, jax.Array]:
    """(count, first index) of the examples of x: [B, ...] with a NaN or inf, in one pass; two
    scalars, so that a batch sharded over several hosts can be read too."""
    rows = ~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=-1)
    return jnp.sum(rows), jnp.argmax(rows)


def count_nonfinite(x) -> jax.Array:
    """The number of examples of x: [B, ...] with a NaN or inf (jit-able), for a caller that
    reports it outside its program with ``report_nonfinite_count``."""
    return _nonfinite(x)[0]


def _report(on_nonfinite: str, message: str, count) -> None:
    count = int(count)
    if count == 0:
        return
    message = message.format(count=count)
    if on_nonfinite == "raise":
        raise NonFiniteError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=5)  # the caller of sample()


def report_nonfinite(values, on_nonfinite: str, what: str, hint: str = "") -> None:
    """Warn (``"warn"``) or raise ``NonFiniteError`` (``"raise"``) when examples of ``values``
    [B, ...] are NaN or inf; ``"ignore"`` does nothing.

    Eagerly, the count is read at once. Under jit (``values`` traced) a ``jax.debug.callback``
    reports it when the program runs: ``"warn"`` warns; ``"raise"`` raises inside the callback,
    which surfaces as a ``JaxRuntimeError`` carrying the message, so call eagerly to catch
    ``NonFiniteError`` itself. A program with a callback is never written to JAX's persistent
    compilation cache: jitted callers that want theirs cached pass ``"ignore"`` inside, return
    ``count_nonfinite`` of the values and call ``report_nonfinite_count`` after the program.
    """
    report_nonfinite_count(
        None if on_nonfinite == "ignore" else count_nonfinite(values),
        values.shape[0], on_nonfinite, what, hint,
    )  # fmt: skip


def report_nonfinite_count(
    count, total: int, on_nonfinite: str, what: str, hint: str = ""
) -> None:  # fmt: skip
    """``report_nonfinite`` of ``count`` (``count_nonfinite``) non-finite examples of ``total``."""
    if on_nonfinite == "ignore":
        return
    message = (
        f"{{count}} of {total} {what} are not finite (NaN or inf): the score returned "
        f"NaN/inf{hint}. Check score_fn (its parameters, its inputs at small t); "
        "on_nonfinite='ignore' silences this check."
    )
    if is_traced(count):
        jax.debug.callback(functools.partial(_report, on_nonfinite, message), count)
    else:
        _report(on_nonfinite, message, count)
