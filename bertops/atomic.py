"""Atomic replacement of an output folder: readers see the old folder or the new one, never a mix,
and a failure part-way keeps the old one."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _step(name: str) -> None:
    """A named point between two steps of a write (the crash tests stop a process at each one)."""


def fsync_dir(folder: Path) -> None:
    """Make the renames inside `folder` durable (a rename lives in the directory's own data)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def recover(target: Path) -> None:
    """Finish what a crashed `replace_dir` left: its old copy back in place if the new one never
    arrived, or removed if the new one did."""
    backup = target.with_name(target.name + ".old")
    if backup.exists():
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            backup.rename(target)


def replace_dir(staging: Path, target: Path) -> None:
    """Put `staging` in place as `target`. Readers see the old folder or the new one, never neither
    and never a mix; a crash at any point leaves the old or the new one (the next call, or any
    `recover`, completes or undoes it), and the result is durable when this returns."""
    recover(target)
    _step("start")
    if target.exists() and _exchange(staging, target):  # one atomic step: no moment without a target
        _step("exchanged")
        fsync_dir(target.parent)
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the old folder
        return
    # Where the filesystem cannot swap: two renames, the old copy kept aside until the new is in place.
    backup = target.with_name(target.name + ".old")
    had_target = target.exists()
    if had_target:
        target.rename(backup)
        _step("old-moved-aside")
    try:
        staging.rename(target)
    except BaseException:
        if had_target:
            backup.rename(target)
        raise
    _step("new-in-place")
    fsync_dir(target.parent)
    shutil.rmtree(backup, ignore_errors=True)


def staging_dir(target: Path) -> Path:
    """A fresh sibling folder to build `target` in (same filesystem, so the final rename is atomic)."""
    recover(target)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


@contextlib.contextmanager
def workspace_lock(root: Path, wait_s: float = 0.0) -> Iterator[str | None]:
    """An exclusive lock on a workspace (one pipeline run at a time). Yields None when acquired,
    else a message naming the holder; the OS drops the lock if the holder dies."""
    import fcntl
    import os
    import time

    path = Path(root) / ".bertops-run.lock"
    with open(path, "a+") as fh:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    yield f"another pipeline run holds the workspace lock ({holder}); this run was skipped"
                    return
                time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        fh.flush()
        try:
            yield None
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
