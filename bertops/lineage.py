"""Lineage: what a model was made from (corpus version, code commit, params, metrics, parent).

Read-only helpers over git and `dvc.lock`; no DVC import (the lock file is plain YAML).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from bertops.errors import BertopsError


class ArtifactMismatch(BertopsError, RuntimeError):
    """Two artifacts that must belong together do not (e.g. a gate decision for other weights)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def folder_fingerprint(folder: Path, exclude: tuple[str, ...] = ("lineage.json",)) -> dict[str, str]:
    """{relative path: sha256} of every file in a model folder: everything loading reads (weights,
    config, the model's own code, tokenizer files), so a change to any of them is caught."""
    return {
        str(path.relative_to(folder)): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in exclude
    }


def git_commit(root: Path = Path(".")) -> str:
    """HEAD's commit, with "-dirty" when tracked files differ from it; "unknown" outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def dvc_hash(path: str, root: Path = Path(".")) -> str | None:
    """The md5 that dvc.lock records for an output path (None when DVC has not run the stage)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
    return None


def build_lineage(
    dataset: str,
    data_hash: str,
    raw_path: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    root: Path = Path("."),
    parent: str | None = None,
    validation_report: str | None = None,
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "data_hash": data_hash,
        "dvc_md5": dvc_hash(raw_path, root),
        "git_commit": git_commit(root),
        "params": params,
        "metrics": metrics,
        "parent_model": parent,
        "validation_report": validation_report,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # the recorded run (a DVC experiment) this model came from, set by the flow while it runs
        "run": os.environ.get("BERTOPS_RUN") or None,
    }
