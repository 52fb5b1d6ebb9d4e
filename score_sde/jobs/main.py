"""Command line: train, evaluate or sample an experiment described by an ml_collections config.

    python -m score_sde --config configs/digits.py --workdir runs/digits --mode train
    python -m score_sde --config configs/digits.py --workdir runs/digits --mode eval
    python -m score_sde --config configs/digits.py --workdir runs/digits --mode sample
    python -m score_sde --config configs/digits.py --mode fid_stats

Any config field can be overridden, e.g. ``--config.training.n_iters=2000``. The config is
validated first: an invalid one stops the job with one line naming the field (exit code 2).
The console script ``score-sde`` takes the same flags.

Exit codes: 0 done; 1 training diverged (the checkpoints before are kept); 2 a user error (the
config, the data, a checkpoint that does not fit, the workdir's disk); 143 stopped by SIGTERM
(preemption) and 130 by SIGINT, in training after saving the step reached: run the same command
again to resume.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from score_sde.jobs.errors import EXIT_CONFIG, EXIT_DIVERGED, EXIT_SIGINT, user_error

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples and reports.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval", "sample", "fid_stats"],
    "What to run; fid_stats: the FID reference statistics of config.eval.fid_split (no workdir).",
)
flags.DEFINE_integer(
    "step", None, "eval/sample: the checkpoint step (default: eval all, sample latest)."
)
flags.DEFINE_integer("num_samples", 64, "sample: how many samples to draw.")
flags.DEFINE_bool("fid", False, "sample: also their FID, KID, IS and precision/recall.")
flags.DEFINE_float(
    "eval_timeout", 600.0, "eval: stop waiting for new checkpoints after this many seconds."
)
flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (one process per host)."
)
flags.DEFINE_string(
    "coordinator_address", None, "multihost: host:port of process 0 (default: auto-detect)."
)
flags.DEFINE_integer(
    "num_processes", None, "multihost: number of processes (default: auto-detect)."
)
flags.DEFINE_integer("process_id", None, "multihost: this process's index (default: auto-detect).")
flags.DEFINE_bool(
    "progress", True, "Show progress bars (training steps, images through Inception)."
)
flags.DEFINE_bool(
    "allow_config_change",
    False,
    "train: resume although the config differs from the checkpoint's (beyond n_iters, logging,"
    " eval and sampling fields).",
)
flags.DEFINE_bool(
    "dry_run",
    False,
    "Parse the flags and validate the config, and that the data set has config.eval.bpd_split"
    " (one line and exit code 2 if invalid), then exit 0 without training, evaluating or touching"
    " the workdir.",
)
flags.mark_flags_as_required(["config"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # orbax logs every save at INFO: keep warnings only
        logging.set_verbosity(logging.WARNING)
    from score_sde.jobs.errors import quiet_orbax_background_errors

    quiet_orbax_background_errors()
    if FLAGS.workdir is None and FLAGS.mode != "fid_stats":
        print(f"--workdir is required for --mode {FLAGS.mode}.", file=sys.stderr)
        return EXIT_CONFIG
    try:  # ml_collections defers a config file's loading error to the first access
        FLAGS.config.keys()
    except OSError:
        path = _config_path(sys.argv)
        why = "no such file" if not os.path.isfile(str(path).split(":")[0]) else "cannot be read"
        print(f"--config {path}: {why} (e.g. --config configs/digits.py).", file=sys.stderr)
        return EXIT_CONFIG
    if FLAGS.dry_run:
        return dry_run(FLAGS.config, FLAGS.workdir, FLAGS.mode)
    if FLAGS.multihost:
        import jax

        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    _cache_compiled_programs()
    from score_sde.jobs import interrupts

    with interrupts.exit_at_once(enabled=not FLAGS.multihost):
        return run_job(
            FLAGS.config,
            FLAGS.workdir,
            mode=FLAGS.mode,
            step=FLAGS.step,
            num_samples=FLAGS.num_samples,
            fid=FLAGS.fid,
            eval_timeout=FLAGS.eval_timeout,
            progress=FLAGS.progress,
            allow_config_change=FLAGS.allow_config_change,
        )


def dry_run(config, workdir: str | None, mode: str) -> int:
    """``--dry_run``: validate ``config`` as the job would (its fields, and that the data set
    has ``eval.bpd_split``), say so, and return the exit code."""
    from score_sde.jobs.config import ConfigError
    from score_sde.jobs.experiment import check_eval_split

    cfg = validated(config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        check_eval_split(cfg)
    except ConfigError as err:
        print(f"Invalid config: {err}", file=sys.stderr)
        return EXIT_CONFIG
    where = f" in {workdir}" if workdir else ""
    print(f"Config valid: --mode {mode}{where} would run (--dry_run: nothing was run).")
    return 0


def validated(config):
    """The ``ExperimentConfig`` of ``config``, or None after printing why it is invalid."""
    import jax

    from score_sde.jobs.config import ConfigError
    from score_sde.jobs.validation import from_config_dict

    try:
        return from_config_dict(config, device_count=jax.device_count())
    except ConfigError as err:
        print(f"Invalid config: {err}", file=sys.stderr)
        return None


def _cache_compiled_programs() -> None:
    """Keep XLA's compiled programs on disk ($SCORE_SDE_CACHE/jax), so a second run of a job
    starts in seconds rather than minutes; JAX_COMPILATION_CACHE_DIR, when set, wins."""
    import jax

    from score_sde.evaluation.weights import cache_dir

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.join(cache_dir(), "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_job(
    config,
    workdir: str | None,
    *,
    mode: str = "train",
    step: int | None = None,
    num_samples: int = 64,
    fid: bool = False,
    eval_timeout: float = 600.0,
    progress: bool = True,
    allow_config_change: bool = False,
) -> int:
    """Validate ``config`` (an ml_collections.ConfigDict) and run ``mode`` in ``workdir``;
    returns the exit code (``exit_status``): 0, 2 for an invalid config or a user's
    error, 1 when training diverged, 143 / 130 when SIGTERM / SIGINT stopped it (training
    saves first)."""
    cfg = validated(config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        _run_mode(
            cfg, workdir, mode, step=step, num_samples=num_samples, fid=fid,
            eval_timeout=eval_timeout, progress=progress, allow_config_change=allow_config_change,
        )  # fmt: skip
    except BaseException as err:
        status = exit_status(err)
        if status is None:
            raise
        print(status[0], file=sys.stderr)
        return status[1]
    return 0


def exit_status(err: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for an error a job reports without a traceback, or None: a
    diverged run (1), a signal (128 + its number), a user's error (2)."""
    from score_sde.jobs.checkpoint import CheckpointMismatchError, Interrupted, NoCheckpointError
    from score_sde.jobs.config import ConfigError
    from score_sde.jobs.integrity import DamagedCheckpointError
    from score_sde.jobs.lock import NoLockSupportError, WorkdirBusyError
    from score_sde.jobs.train import DivergedError

    if isinstance(err, DivergedError):
        return str(err), EXIT_DIVERGED
    if isinstance(err, Interrupted):
        return str(err), err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return "Interrupted (SIGINT).", EXIT_SIGINT
    told = (CheckpointMismatchError, NoCheckpointError, ConfigError, DamagedCheckpointError)
    if isinstance(err, told + (WorkdirBusyError, NoLockSupportError)):
        return str(err), EXIT_CONFIG
    message = user_error(err) if isinstance(err, Exception) else None
    return None if message is None else (message, EXIT_CONFIG)


def _run_mode(cfg, workdir: str | None, mode: str, *, step, num_samples, fid, eval_timeout,
              progress, allow_config_change) -> None:  # fmt: skip
    """Run job ``mode`` of the validated config ``cfg``."""
    from score_sde.jobs.runlog import say

    if mode == "train":
        from score_sde.jobs.train import train

        train(cfg, workdir, progress=progress, allow_config_change=allow_config_change)
    elif mode == "eval":
        from score_sde.jobs.evaluate import evaluate

        evaluate(cfg, workdir, step=step, timeout_seconds=eval_timeout, progress=progress)
    elif mode == "fid_stats":
        from score_sde.jobs.fid_eval import fid_stats_job

        fid_stats_job(cfg, progress=progress)
    else:
        from score_sde.jobs.evaluate import generate

        path = generate(
            cfg, workdir, step=step, num_samples=num_samples, fid=fid, progress=progress
        )
        say(f"Wrote {path}")


def _config_path(argv: list[str]) -> str | None:
    """The ``--config`` file named in ``argv``, if any."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _config_package_root(argv: list[str]) -> str | None:
    """The folder holding the ``configs`` package of the ``--config`` file, if any: config
    files under configs/vp/ etc. import ``configs.default_*``."""
    path = _config_path(argv)
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    while folder != os.path.dirname(folder):
        if os.path.isfile(os.path.join(folder, "configs", "__init__.py")):
            return folder
        folder = os.path.dirname(folder)
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad ``--config.<field>=`` override reported in one line
    (exit code 2) rather than as ml_collections' traceback."""
    try:
        return FLAGS(argv)
    except flags.Error as err:  # a value absl cannot parse as the field's type, an unknown flag
        text = " ".join(str(err).split())
        print(
            f"{text} (docs/config.md gives each field's type; --help lists the flags)",
            file=sys.stderr,
        )
        sys.exit(EXIT_CONFIG)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        text = str(err).encode().decode("unicode_escape")  # ml_collections quotes twice
        message = " ".join(text.replace("'", " ").split())
        print(f"Invalid config override: no such field or bad value: {message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


HELP = ("-h", "--help", "-?", "--helpshort")


def usage() -> str:
    """This module's docstring and its flags (absl's own help names only --helpfull)."""
    return f"{__doc__}\nflags:\n{FLAGS.module_help(sys.modules[__name__])}"


def run() -> None:
    """Entry point of ``python -m score_sde`` and of the ``score-sde`` console script."""
    if any(arg in HELP for arg in sys.argv[1:]):
        print(usage())
        sys.exit(0)
    root = _config_package_root(sys.argv)
    if root is not None and root not in sys.path:
        sys.path.insert(0, root)
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
