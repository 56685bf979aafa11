"""Atomic replacement of an output folder: readers see the old folder or the new one, never a mix,
and a failure part-way keeps the old one."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path


def replace_dir(staging: Path, target: Path) -> None:
    """Move `staging` into place as `target`; the previous `target` is removed only afterwards."""
    backup = target.with_name(target.name + ".old")
    shutil.rmtree(backup, ignore_errors=True)
    had_target = target.exists()
    if had_target:
        target.rename(backup)
    try:
        staging.rename(target)
    except BaseException:
        if had_target:
            backup.rename(target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def staging_dir(target: Path) -> Path:
    """A fresh sibling folder to build `target` in (same filesystem, so the final rename is atomic)."""
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
