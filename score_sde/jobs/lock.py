"""One training job per workdir.

``exclusive(path)`` holds an exclusive ``flock`` on a lock file naming its holder (host and
pid) for as long as the job runs. The kernel drops the lock when the holder dies, however it
dies, so a stale lock never blocks; a lock file still naming a holder when it is taken means
the holder did not finish cleanly, which is logged. On NFS, Linux maps ``flock`` to the
server's byte-range locks (NFSv4, or NFSv3 with lockd): the lock holds across hosts as far as
the server honours them. Readers (an eval job beside training) take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from score_sde.jobs.runlog import say


class WorkdirBusyError(RuntimeError):
    """Another training job holds the workdir."""


class NoLockSupportError(RuntimeError):
    """The workdir's file system cannot lock files (Lustre mounted without ``flock``, some
    FUSE and old NFS mounts)."""


_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _try_lock(path: str) -> tuple[int | None, str]:
    """(fd, previous holder) with the lock taken, or (None, current holder)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        if err.errno not in _BUSY:
            raise NoLockSupportError(
                f"{path} cannot be locked ({os.strerror(err.errno)}): the file system does not "
                "support file locks; use a --workdir on one that does (local disk, NFSv4) or "
                "mount it with locks on (Lustre: -o flock)."
            ) from err
        return None, holder
    previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder().encode(), 0)
    os.fsync(fd)
    return fd, previous


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the block; raise ``WorkdirBusyError`` naming the
    holder if another job has it. Across processes (``jax.distributed``) process 0 takes the
    lock and every process learns the outcome."""
    fd, holder = _try_lock(path) if jax.process_index() == 0 else (None, "")
    if jax.process_count() > 1:
        taken = multihost_utils.broadcast_one_to_all(np.int32(fd is not None))
        holder = holder if jax.process_index() == 0 else "another job"
    else:
        taken = fd is not None
    if not taken:
        raise WorkdirBusyError(
            f"{os.path.dirname(path)} is being trained by {holder or 'another job'} (lock "
            f"{path}): wait for that run to end or stop it, or use another --workdir."
        )
    if holder:
        say(f"Took over the lock of {holder}, which did not finish cleanly.")
    try:
        yield
    finally:
        if fd is not None:
            os.ftruncate(fd, 0)  # released cleanly: nobody to report at the next start
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
