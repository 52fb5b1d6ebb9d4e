"""Ctrl-C (SIGINT) and SIGTERM in the command-line jobs: one line, the right exit code, no crash.

While ``exit_at_once()`` is active (the CLI's job, single process), a signal ends the process
at once with one line and exit code 128 + its number, even in the middle of an XLA compile:
a watcher thread is woken by the signal's wake-up fd and calls ``os._exit``, so no
KeyboardInterrupt unwinds through JAX's C++ (which crashed the process at exit). Where a save
is possible (training, once past its first step: ``checkpoint.Preemption`` sets ``deferring``),
the first signal is a request that the loop honours at the next step boundary (save, then exit);
a second one exits at once, leaving the checkpoints written before intact (orbax writes a step
into a temporary folder and renames it when complete).

Library calls (``run_job`` from Python, notebooks) do not use it: there Ctrl-C stays Python's
KeyboardInterrupt, so a Jupyter kernel survives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass
class Guard:
    """What a signal does now: ``deferring`` (a save is possible) makes the first one a request,
    recorded in ``requested`` for the training loop."""

    deferring: bool = False
    requested: int | None = None


active: Guard | None = None  # the CLI job's guard while one runs


def _exit_now(signum: int, again: bool) -> None:
    name = signal.Signals(signum).name
    if again:
        line = (
            f"Interrupted again ({name}): stopped at once; the checkpoints written before are "
            "intact: run the same command to resume."
        )
    else:
        line = (
            f"Interrupted ({name}): stopped at once; what was written before is intact: run the "
            "same command to go on."
        )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.write(2, f"\n{line}\n".encode())
    os._exit(128 + signum)


def _watch(reader: socket.socket, guard: Guard) -> None:
    """Act on each signal number written to the wake-up fd, until the socket closes."""
    while data := reader.recv(64):
        for signum in data:
            if signum not in SIGNALS:
                continue
            if guard.deferring and guard.requested is None:
                guard.requested = signum
                name = signal.Signals(signum).name
                os.write(2, f"\n{name}: saving at the end of this step, then stopping "
                         "(Ctrl-C again to stop at once).\n".encode())  # fmt: skip
            else:
                _exit_now(signum, again=guard.requested is not None)


@contextlib.contextmanager
def exit_at_once(enabled: bool = True) -> Iterator[Guard | None]:
    """For the ``with`` block, SIGINT and SIGTERM end the process as the module says; a no-op
    (yields None) unless ``enabled`` and in the main thread."""
    global active
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield None
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    # A Python handler must be set for the C handler to write the wake-up fd; it does nothing.
    previous = {s: signal.signal(s, lambda signum, frame: None) for s in SIGNALS}
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    guard = active = Guard()
    watcher = threading.Thread(target=_watch, args=(reader, guard), daemon=True)
    watcher.start()
    try:
        yield guard
    finally:
        signal.set_wakeup_fd(old_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        active = None
        writer.close()
        watcher.join(timeout=5)
        reader.close()
