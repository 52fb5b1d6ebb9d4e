"""Checkpoints: an orbax ``CheckpointManager`` over a composite of

- ``state``: the train-state pytree (params, EMA, optimiser state, step, RNG), ``StandardSave``;
- ``config`` and ``metadata``: JSON (``JsonSave``), so a checkpoint says how it was made;
- ``<name>_data``: the position of each data iterator (grain checkpointing, one file per
  process), so a resumed run sees exactly the batches an uninterrupted one would.

Saving is asynchronous (the device-to-host copy blocks, the write does not) and keeps the last
``max_to_keep`` checkpoints plus every multiple of ``keep_period``. ``Preemption`` turns SIGTERM
and SIGINT into "save at the next step boundary and exit" (``Interrupted``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from score_sde.jobs import interrupts
from score_sde.jobs.errors import first_line
from score_sde.jobs.integrity import (
    DamagedCheckpointError,
    all_agree,
    checksums,
    flat_leaves,
    move_aside,
    silence_failed_reads,
    verify,
)
from score_sde.jobs.runlog import say

STATE, CONFIG, METADATA, CHECKSUMS = "state", "config", "metadata", "checksums"
DATA_ITEMS = ("train", "eval")  # the data iterators a training checkpoint holds


class CheckpointMismatchError(ValueError):
    """A checkpoint whose parameters do not match the model built from the config."""


class NoCheckpointError(FileNotFoundError):
    """The requested checkpoint (or any checkpoint) does not exist."""


def _flat_shapes(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    """{"params/conv/kernel": (shape, dtype)} for each leaf."""
    return {name: (tuple(leaf.shape), str(leaf.dtype)) for name, leaf in flat_leaves(tree)}


def check_compatible(saved_tree, target_tree, where: str) -> None:
    """Raise ``CheckpointMismatchError`` naming the first parameter whose presence or shape
    differs between the checkpoint's tree (``saved_tree``, orbax metadata) and the target."""
    saved, target = _flat_shapes(saved_tree), _flat_shapes(target_tree)
    fix = (
        "Train this config in a fresh --workdir, or run with the config the checkpoint was "
        "trained with (stored in its config/ item)."
    )
    for name, (shape, _) in target.items():
        if name not in saved:
            raise CheckpointMismatchError(
                f"{where} does not match the config: it has no parameter {name} (shape "
                f"{shape} in the model built from the config). {fix}"
            )
        if saved[name][0] != shape:
            raise CheckpointMismatchError(
                f"{where} does not match the config: parameter {name} has shape "
                f"{saved[name][0]} in the checkpoint but {shape} in the model. {fix}"
            )
    extra = sorted(set(saved) - set(target))
    if extra:
        raise CheckpointMismatchError(
            f"{where} does not match the config: the checkpoint has parameter {extra[0]} "
            f"(shape {saved[extra[0]][0]}) that the model built from the config lacks. {fix}"
        )


def abstract_like(tree):
    """ShapeDtypeStructs (with shardings) of ``tree``: the restore target."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
        tree,
    )


@contextlib.contextmanager
def _quiet_read_only_notice():
    """Drop orbax's "Given directory is read only" warning, logged by every read-only manager:
    an eval job opens the training run's checkpoints read-only on purpose."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")

    logger = logging.getLogger("absl")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


class Checkpointer:
    """Save and restore (state, config, metadata, data-iterator positions) under ``directory``."""

    def __init__(
        self,
        directory: str,
        *,
        max_to_keep: int | None = 3,
        keep_period: int | None = None,
        async_save: bool = True,
        read_only: bool = False,
        data_names: tuple[str, ...] = DATA_ITEMS,
    ):
        self.directory = os.path.abspath(directory)
        self.data_names = tuple(data_names)
        self.read_only = read_only
        handlers = {
            # A reader restores part of the state (StandardSave's format, read as a PyTree).
            STATE: ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler(),
            CONFIG: ocp.JsonCheckpointHandler(),
            METADATA: ocp.JsonCheckpointHandler(),
            CHECKSUMS: ocp.JsonCheckpointHandler(),
        }
        for name in self.data_names:
            handlers[_data_item(name)] = grain.checkpoint.CheckpointHandler()
        if read_only:  # the settings orbax would otherwise override with a warning
            options = ocp.CheckpointManagerOptions(
                read_only=True, save_interval_steps=0, max_to_keep=None, create=False
            )
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                keep_period=keep_period,
                enable_async_checkpointing=async_save,
            )
        if read_only and not os.path.isdir(self.directory):
            raise NoCheckpointError(
                f"No checkpoints at {self.directory}: run --mode train with this --workdir first."
            )
        with _quiet_read_only_notice():
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_handlers=handlers
            )

    # --- queries -------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Steps of the finished checkpoints, oldest first (re-read from disk)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def step_or_latest(self, step: int | None) -> int:
        """``step`` (None: the latest); NoCheckpointError when it is not saved."""
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise NoCheckpointError(
                    f"No checkpoint in {self.directory}: run --mode train with this --workdir."
                )
            return steps[-1]
        if step not in steps:
            raise NoCheckpointError(
                f"No checkpoint for step {step} in {self.directory}; available steps: {steps}."
            )
        return step

    def read_json(self, step: int | None = None) -> tuple[dict, dict]:
        """(config, metadata) saved with checkpoint ``step`` (default: the latest)."""
        step = self.step_or_latest(step)
        args = ocp.args.Composite(
            **{CONFIG: ocp.args.JsonRestore(), METADATA: ocp.args.JsonRestore()}
        )
        try:
            out = self._manager.restore(step, args=args)
        except Exception as err:  # a missing or corrupt JSON file
            where = os.path.join(self.directory, str(step))
            raise DamagedCheckpointError(
                f"Checkpoint {where}'s config cannot be read ({_described(err)})"
            ) from err
        return dict(out[CONFIG]), dict(out[METADATA])

    # --- save / restore ------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: Any,
        *,
        config: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        iterators: Mapping[str, Any] | None = None,
    ) -> bool:
        """Start saving checkpoint ``step``; returns once the arrays are copied off the device,
        so ``state`` may be donated right after. ``iterators`` maps names in ``data_names`` to
        grain iterators, whose positions are read now."""
        items = {
            STATE: ocp.args.StandardSave(state),
            CONFIG: ocp.args.JsonSave(dict(config)),
            METADATA: ocp.args.JsonSave({"step": int(step), **(metadata or {})}),
            CHECKSUMS: ocp.args.JsonSave(checksums(state)),
        }
        for name, it in (iterators or {}).items():
            items[_data_item(name)] = grain.checkpoint.CheckpointSave(it)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(
        self,
        target: Any,
        step: int | None = None,
        *,
        iterators: Mapping[str, Any] | None = None,
        skip: tuple[str, ...] = (),
    ) -> tuple[Any, int]:
        """Restore checkpoint ``step`` (default: the latest) into the structure, shapes and
        shardings of ``target``, and the iterators' positions in place; returns (state, step).
        The ``skip`` fields of the state (a dataclass) are not read: they come back as None and
        may be None in ``target`` (an eval needs no optimiser state).

        Raises ``CheckpointMismatchError`` naming the parameter if the shapes differ, and
        ``DamagedCheckpointError`` if the checkpoint cannot be read or fails its checksums.
        """
        step = self.step_or_latest(step)
        where = f"Checkpoint {os.path.join(self.directory, str(step))}"
        fields = _as_dict(target)
        read = {name: value for name, value in fields.items() if name not in skip}
        check_compatible(self._saved_tree(step, where, skip), read, where)
        if self.read_only:  # orbax's partial restore: the fields to read, as a dict
            item = abstract_like(read)
            args = ocp.args.PyTreeRestore(
                item, ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
            )
        elif skip:
            raise ValueError("Checkpointer.restore(skip=...) needs a read_only Checkpointer.")
        else:
            args = ocp.args.StandardRestore(abstract_like(target))
        items = {STATE: args}
        for name, it in (iterators or {}).items():
            items[_data_item(name)] = grain.checkpoint.CheckpointRestore(it)
        if os.path.isdir(os.path.join(self.directory, str(step), CHECKSUMS)):
            items[CHECKSUMS] = ocp.args.JsonRestore()
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:  # orbax, tensorstore and json raise many types for bad files
            raise DamagedCheckpointError(f"{where} cannot be read ({_described(err)})") from err
        state = out[STATE]
        if CHECKSUMS in items:
            verify(state, dict(out[CHECKSUMS]), where)
        if self.read_only:
            state = type(target)(**state, **dict.fromkeys(skip))
        return state, step

    def _saved_tree(self, step: int, where: str, skip: tuple[str, ...]) -> dict:
        """The state's tree as saved (orbax metadata), ``skip`` fields left out; a checkpoint
        whose metadata is missing or unreadable is damaged, not a mismatch."""
        try:
            saved = self._manager.item_metadata(step)[STATE]
            saved = getattr(saved, "tree", saved)
            if not saved:
                raise ValueError("no state metadata")
            return {k: v for k, v in saved.items() if k not in skip}
        except Exception as err:  # orbax raises many types for a missing or bad metadata file
            raise DamagedCheckpointError(f"{where} cannot be read ({_described(err)})") from err

    def restore_newest_good(
        self, target: Any, *, iterators: Mapping[str, Any] | None = None, damaged_dir: str
    ) -> tuple[Any, int] | None:
        """``restore`` the newest checkpoint that reads and verifies, moving each newer damaged
        one into ``damaged_dir`` with a log line; None if there is no checkpoint. Raises
        ``DamagedCheckpointError`` when every checkpoint is damaged (all moved aside)."""
        steps, moved = self.all_steps(), []
        for step in reversed(steps):
            try:
                restored, error = self.restore(target, step, iterators=iterators), None
            except DamagedCheckpointError as err:
                restored, error = None, err
                silence_failed_reads()
            if all_agree(error is None):
                return restored
            moved.append(move_aside(self.directory, step, damaged_dir))
            self._manager.reload()
            say(f"{error or f'Checkpoint {step} is damaged on another process'}: moved to "
                f"{moved[-1]}; trying the one before it.")  # fmt: skip
        if not steps:
            return None
        raise DamagedCheckpointError(
            f"Every checkpoint in {self.directory} is damaged (moved to {damaged_dir}): the "
            "next run here starts from step 0; train in a fresh --workdir to keep them apart."
        )

    def wait(self) -> None:
        """Block until the pending asynchronous save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _as_dict(state: Any) -> dict[str, Any]:
    """The top-level fields of a state: a dataclass's or a dict's."""
    if dataclasses.is_dataclass(state):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return dict(state)


def _described(err: Exception) -> str:
    return f"{type(err).__name__}: {first_line(err)}"


def _data_item(name: str) -> str:
    return f"{name}_data"


class Interrupted(Exception):
    """Training stopped on a signal after saving its step: ``exit_code`` is 128 + the signal's
    number (143 for SIGTERM, 130 for SIGINT), as a shell reports a process it ended."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step, self.exit_code = signum, step, 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"Interrupted ({name}): saved step {step}; run again to resume.")


class Preemption:
    """SIGTERM (and SIGINT) become a request to save at the next step boundary and exit.

    Under the CLI (``interrupts.exit_at_once``): a signal before ``arm()`` (the first step's
    compile) stops at once; after it, the first is a request and a second stops at once.
    Otherwise, single process: a signal handler records the signal; a second SIGINT raises
    KeyboardInterrupt. Multi-process: JAX's preemption sync point for SIGTERM, so every process
    agrees on the step at which to stop (SIGINT keeps Python's default there).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._guard = interrupts.active

    def __enter__(self) -> Preemption:
        main = threading.current_thread() is threading.main_thread()
        if self._guard is None and jax.process_count() == 1 and main:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self._guard is not None:
            self._guard.deferring = False

    def arm(self) -> None:
        """From now on a save is possible: under the CLI, the first signal becomes a request."""
        if self._guard is not None:
            self._guard.deferring = True

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

    def reached(self, step: int) -> bool:
        """True when the run should save ``step`` and exit."""
        if self._guard is not None and self._guard.requested is not None:
            self.signum = self._guard.requested
        if jax.process_count() > 1 and ocp.multihost.reached_preemption(step):
            self.signum = signal.SIGTERM
        return self.signum is not None
