"""Defaults for low-dimensional (2-D) data with the MLP: trains in a minute on a CPU."""

from score_sde.jobs.config import to_config_dict


def get_default_configs(dataset, sde):
    """A toy experiment on ``dataset`` with ``sde`` ("vpsde" or "vesde")."""
    config = to_config_dict()
    config.sde.name = sde
    config.sde.N = 1000
    config.sde.beta_min = 0.1
    config.sde.beta_max = 20.0
    # VE: sigma_max about the largest distance between two points (Song & Ermon 2020): the
    # 2-D sets lie within [-3, 3]².
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 6.0

    training = config.training
    training.batch_size = 512
    training.n_iters = 20_000
    training.snapshot_freq = 5000
    training.snapshot_freq_for_preemption = 1000
    training.log_freq = 100
    training.eval_freq = 500
    training.n_jitted_steps = 50
    training.continuous = True
    training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.n_steps = 500

    evaluate = config.eval
    evaluate.batch_size = 1000
    evaluate.enable_loss = True
    evaluate.enable_bpd = True
    evaluate.enable_sampling = True
    evaluate.num_samples = 5000
    evaluate.rtol = 1e-5
    evaluate.atol = 1e-5

    data = config.data
    data.dataset = dataset
    data.image_size = None
    data.num_channels = None
    data.random_flip = False
    data.centered = False

    model = config.model
    model.name = "mlp"
    model.parameterization = "eps"
    model.width = 256
    model.num_blocks = 3
    model.nf = 32  # width of the noise-level embedding
    model.embedding_type = "positional"  # of 999 t
    model.dropout = 0.0
    model.ema_rate = 0.999

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 500
    optim.grad_clip = 1.0
    return config
