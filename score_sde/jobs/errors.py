"""Errors a user (or the machine) causes, told in one line: unusable data, and the file
system's (a read-only or full disk, a workdir that is a file), wherever in a chain of
exceptions they surface.

orbax writes checkpoints in a background thread and tensorstore reports the file system's
errors as status codes (``RESOURCE_EXHAUSTED``), so a full disk can reach the job as a
``ValueError`` raised at the next save, followed by an ``OSError`` while closing the logs.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import traceback
import warnings

EXIT_CONFIG, EXIT_DIVERGED = 2, 1
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal's number, as a shell reports it

_NO_SPACE = "free space, then rerun the same command: it resumes from the last checkpoint"
_FIXES = {
    errno.ENOSPC: _NO_SPACE,
    errno.EDQUOT: _NO_SPACE,
    errno.EROFS: "choose a writable --workdir",
    errno.EACCES: "choose a --workdir you may write to, or change its permissions",
    errno.EPERM: "choose a --workdir you may write to, or change its permissions",
    errno.EEXIST: "a file stands where a folder is needed: choose another --workdir",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another --workdir",
}
# tensorstore's status codes for the same errors.
_STATUS = {"RESOURCE_EXHAUSTED": errno.ENOSPC, "PERMISSION_DENIED": errno.EACCES}


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def user_error(err: BaseException) -> str | None:
    """One line for a user's error anywhere in ``err``'s chain (unusable data, or the file
    system's), or None. The input pipeline may re-raise a reader's error in another type."""
    from score_sde.datasets import DataError, DatasetNotPreparedError

    for e in _chain(err):
        if isinstance(e, DataError | DatasetNotPreparedError):
            return str(e)
    return file_system_error(err)


def first_line(err: BaseException) -> str:
    """The error's first line, without the spec tensorstore appends, at most 200 characters."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    for appendix in (" See full TensorStore details", " [tensorstore_spec"):
        first = first.split(appendix)[0]
    return first[:200]


def file_system_error(err: BaseException) -> str | None:
    """One line for a file-system error anywhere in ``err``'s chain, or None."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in _FIXES:
            where = f": {e.filename}" if e.filename else ""
            return f"{os.strerror(e.errno)}{where}: {_FIXES[e.errno]}."
        for status, code in _STATUS.items():
            if str(e).startswith(status):
                # 'local file "/..."' or 'Failed writing: "/..."'
                path = re.search(r'"(/[^"]+)"', str(e))
                where = f": {path[1]}" if path else f" ({first_line(e)})"
                return f"{os.strerror(code)}{where}: {_FIXES[code]}."
    return None


class _DropOrbaxTracebacks(logging.Filter):
    """orbax logs a failed background write with its traceback and raises it again in the
    main thread, where the job reports it: keep the one report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and "orbax" in record.pathname)


class _DropOrphanedTasks(logging.Filter):
    """asyncio's reports on orbax's writes orphaned by a failed save ("Task was destroyed but
    it is pending", "Future exception was never retrieved"): the save's own error is reported."""

    ORPHANED = ("Task was destroyed", "Future exception was never", "Task exception was never")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith(self.ORPHANED) and "orbax" in text)


def _closed_loop_wakeup(unraisable) -> bool:
    """A tensorstore write finishing after the orbax event loop that awaited it was closed:
    orbax closes a save's loop when one write fails, leaving its sibling writes pending, and
    tensorstore reports their late wake-up as unraisable (no ``object``)."""
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return (
        unraisable.object is None
        and isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"
        and bool(frames)
        and frames[0].name == "call_soon_threadsafe"
    )


# orbax's handlers' saves left unawaited by a failed save, reported at the interpreter's exit
_UNAWAITED_SAVE = r"coroutine '\w+CheckpointHandler\.async_save' was never awaited"


def quiet_orbax_background_errors() -> None:
    warnings.filterwarnings("ignore", _UNAWAITED_SAVE, RuntimeWarning)
    logging.getLogger("absl").addFilter(_DropOrbaxTracebacks())
    logging.getLogger("asyncio").addFilter(_DropOrphanedTasks())
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not _closed_loop_wakeup(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
