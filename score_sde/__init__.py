"""score_sde: score-based generative models through SDEs, in JAX."""

__version__ = "0.1.0"
