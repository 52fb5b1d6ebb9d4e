"""The PyTorch side of ``python -m bench.train --diffusers``: diffusers' ``UNet2DModel`` as Ho et
al.'s DDPM CIFAR-10 network, trained the way a diffusers user writes the loop.

The network takes the arguments of google/ddpm-cifar10-32's config.json (the diffusers port of
Ho et al.'s checkpoint) plus Ho et al.'s dropout 0.1, which that config leaves at diffusers'
default 0: 35,746,307 parameters, the count of our ``ddpm`` model on configs/vp/cifar10_ddpm.py.

One step, float32, eager: eps-prediction MSE on x_t = sqrt(abar) x0 + sqrt(1 - abar) eps at
random integer t (``DDPMScheduler.add_noise``, the linear 1e-4..0.02 chain of 1000 steps),
``loss.backward()``, gradient clipping at norm 1 (as our config, optim.grad_clip, and diffusers'
examples/unconditional_image_generation), ``torch.optim.Adam`` (lr 2e-4) step, ``zero_grad``,
EMA of a copy of the parameters at decay 0.9999 (``torch._foreach_mul_/_foreach_add_``).

FLOPs are ``torch.utils.flop_counter.FlopCounterMode``'s count of one forward + backward: matmuls,
convolutions and attention only (CPU attention's op is added to its table), so the elementwise
work (GroupNorm, SiLU, Adam, EMA) that XLA's cost analysis counts on our side is not counted.

Adam runs with ``foreach=True`` (the multi-tensor path, torch's default on CUDA only; on CPU
its default per-tensor loop is a visible share of the step at small batches), so the baseline
is torch at its best eager settings, not at its CPU defaults.

``compile=True`` wraps the model in ``torch.compile`` (inductor, needs a C++ compiler); the
first steps then include the compilation, excluded with the warm-up. Not yet tried on this
machine (the smoke runs were eager only); eager is the reported default.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils import flop_counter

aten = torch.ops.aten

# google/ddpm-cifar10-32's config.json (diffusers' port of Ho et al.'s CIFAR-10 checkpoint).
# Down blocks at 32, 16, 8, 4 pixels and up blocks at 4, 8, 16, 32: attention at 16x16 only.
UNET_ARGS = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,  # one head of all channels, as Ho et al.
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_num_groups=32,
    norm_eps=1e-6,
    act_fn="silu",
    time_embedding_type="positional",
    dropout=0.1,  # Ho et al.'s CIFAR-10 dropout (absent from the hub config: 0 there)
)
CHAIN = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


# CPU attention's ops, missing from FlopCounterMode's table (same shapes as the CUDA kernels).
def _sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q, k, v)


def _sdpa_backward(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad, q, k, v)


SDPA_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
}


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n float32 torch matmul (2 n³ FLOPs) over ``repeats`` runs."""
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    a @ a
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class Step:
    """One diffusers-style optimiser step on a fixed batch ``x0`` [B, 3, 32, 32] in [-1, 1]."""

    def __init__(self, x0: torch.Tensor, seed: int = 0, compile: bool = False):
        torch.manual_seed(seed)
        self.model = UNet2DModel(**UNET_ARGS).train()
        self.forward = torch.compile(self.model) if compile else self.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        self.optimizer = torch.optim.Adam(self.params, lr=2e-4, foreach=True)
        self.scheduler = DDPMScheduler(**CHAIN)
        self.x0, self.decay = x0, 0.9999

    def loss(self) -> torch.Tensor:
        noise = torch.randn_like(self.x0)
        t = torch.randint(0, CHAIN["num_train_timesteps"], (self.x0.shape[0],))
        x_t = self.scheduler.add_noise(self.x0, noise, t)
        return F.mse_loss(self.forward(x_t, t).sample, noise)

    def __call__(self) -> float:
        loss = self.loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_mul_(self.ema, self.decay)
            torch._foreach_add_(self.ema, self.params, alpha=1 - self.decay)
        return loss.item()

    def flops(self) -> int:
        """FLOPs of one forward + backward (matmuls, convolutions, attention), counted on a
        copy of the eager model so the state being timed is untouched."""
        model = copy.deepcopy(self.model)
        counter = flop_counter.FlopCounterMode(display=False, custom_mapping=SDPA_FLOPS)
        noise = torch.randn_like(self.x0)
        t = torch.randint(0, CHAIN["num_train_timesteps"], (self.x0.shape[0],))
        with counter:
            x_t = self.scheduler.add_noise(self.x0, noise, t)
            F.mse_loss(model(x_t, t).sample, noise).backward()
        return counter.get_total_flops()


def bench(x0: torch.Tensor, steps: int, peak: float, warmup: int = 2, compile: bool = False):
    """Time ``steps`` steps after ``warmup`` untimed ones; the row of bench/train.py's table."""
    step = Step(x0, compile=compile)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    flops = step.flops()
    return dict(
        params=sum(p.numel() for p in step.params),
        compile_s=first - warmup * per_step,
        steps_per_s=1 / per_step,
        examples_per_s=x0.shape[0] / per_step,
        gflop_per_step=flops / 1e9,
        gflop_per_s=flops / per_step / 1e9,
        peak_fraction=flops / per_step / peak,
    )
