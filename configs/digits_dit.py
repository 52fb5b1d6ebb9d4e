"""The offline digits (configs/digits.py: 16x16 sklearn digits, VP SDE) with a small DiT
(Peebles & Xie 2023) instead of the U-Net: 2x2 patches (64 tokens), width 128, 4 blocks of
adaLN-Zero, 4 heads; 1.3M parameters. Trains on a 2-core CPU in minutes, like the U-Net:
    python -m score_sde --config configs/digits_dit.py --workdir runs/digits_dit --mode train
"""

from configs import digits


def get_config():
    config = digits.get_config()
    model = config.model
    model.name = "dit"
    model.nf = 256  # the sinusoidal embedding of t, as DiT's
    model.patch_size = 2
    model.hidden_size = 128
    model.depth = 4
    model.num_heads = 4
    model.mlp_ratio = 4.0
    model.dropout = 0.0
    model.init_scale = 0.0  # adaLN-Zero: the blocks start as the identity, the output at 0
    return config
