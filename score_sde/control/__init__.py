"""Controllable generation: wrappers of a score function (guidance, inpainting, colorization,
thresholding) that compose with every sampler, and SDEdit and inversion on the fixed-grid
solvers."""

from score_sde.control.guidance import (
    classifier_free_guidance,
    classifier_guidance,
    with_label,
)
from score_sde.control.inpainting import colorization_score, inpainting_score
from score_sde.control.inversion import decode, encode, reconstruct
from score_sde.control.sdedit import sdedit
from score_sde.thresholding import threshold, thresholded

__all__ = [
    "classifier_free_guidance",
    "classifier_guidance",
    "colorization_score",
    "decode",
    "encode",
    "inpainting_score",
    "reconstruct",
    "sdedit",
    "threshold",
    "thresholded",
    "with_label",
]
