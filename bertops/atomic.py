"""Atomic replacement of an output folder: readers see the old folder or the new one, never a mix,
and a failure part-way keeps the old one."""
from __future__ import annotations

import shutil
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
