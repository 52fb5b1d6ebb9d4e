"""Defaults shared by the CIFAR-10 configs (Song et al. 2021, Table 3 and Appendix)."""

from score_sde.jobs.config import to_config_dict


def get_default_configs():
    config = to_config_dict()
    sde = config.sde
    sde.sigma_min = 0.01
    sde.sigma_max = 50.0
    sde.N = 1000
    sde.beta_min = 0.1
    sde.beta_max = 20.0

    # training
    training = config.training
    training.batch_size = 128
    training.n_iters = 1_300_001
    training.snapshot_freq = 50_000
    training.snapshot_freq_for_preemption = 10_000
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_sampling = True
    training.n_jitted_steps = 5
    training.continuous = True
    training.reduce_mean = False
    training.likelihood_weighting = False
    training.importance_sampling = False

    # sampling
    sampling = config.sampling
    sampling.n_corrector_steps = 1
    sampling.denoise = True
    sampling.probability_flow = False
    sampling.snr = 0.16

    # evaluation
    evaluate = config.eval
    evaluate.batch_size = 1024
    evaluate.enable_sampling = False
    evaluate.num_samples = 50_000
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_split = "test"
    evaluate.rtol = 1e-5
    evaluate.atol = 1e-5

    # data
    data = config.data
    data.dataset = "cifar10"
    data.image_size = 32
    data.num_channels = 3
    data.random_flip = True
    data.centered = False
    data.uniform_dequantization = False

    # model
    model = config.model
    model.dropout = 0.1
    model.embedding_type = "fourier"

    # optimisation: Adam, lr 2e-4 after a linear warm-up of 5000 steps, gradient clipping at 1
    optim = config.optim
    optim.optimizer = "Adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000
    optim.grad_clip = 1.0

    config.seed = 42
    return config


def set_ddpmpp(model, num_res_blocks):
    """DDPM++ (VP and sub-VP): the network predicts the noise, time enters as t·999."""
    model.name = "ncsnpp"
    model.parameterization = "eps"
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = num_res_blocks
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.fir = False
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.init_scale = 0.0
    model.embedding_type = "positional"
    model.fourier_scale = 16.0


def set_ncsnpp(model, num_res_blocks):
    """NCSN++ (VE): DDPM++ with score output divided by sigma, FIR resampling, residual input
    and a Gaussian Fourier embedding of log sigma."""
    set_ddpmpp(model, num_res_blocks)
    model.parameterization = "score"
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.fir = True
    model.progressive_input = "residual"
    model.embedding_type = "fourier"
