"""What the atomic writers promise, checked by killing a real process at each step of a write (no
cleanup code runs, as in a crash or a power loss): a prepared-corpus or model folder replaced with
`replace_dir` is always the old one or the new one, never missing and never a mix, and the next
write neither loses nor keeps debris; a registry change is committed whole or not at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

CRASH = 97


def _run_until(step: str, code: str, swap: bool = True) -> int:
    """Run `code` in a child that dies (os._exit, no cleanup) when the writer reaches `step`."""
    prelude = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
import bertops.atomic as atomic, bertops.registry as registry
def step(name):
    if name == {step!r}:
        os._exit({CRASH})
atomic._step = registry._step = step
if not {swap!r}:
    atomic._exchange = lambda a, b: False  # a filesystem without an atomic swap: the two-rename path
"""
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True).returncode


def _folder(path: Path, version: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "a.txt").write_text(version)
    (path / "b.txt").write_text(version)


def _version(path: Path) -> str | None:
    if not path.is_dir():
        return None
    versions = {(path / name).read_text() for name in ("a.txt", "b.txt")}
    assert len(versions) == 1, f"a mix of two versions: {versions}"
    return versions.pop()


@pytest.mark.parametrize(
    ("swap", "step", "expected"),
    [
        (True, "start", "old"),
        (True, "exchanged", "new"),
        (False, "start", "old"),
        (False, "old-moved-aside", None),  # the only moment without a target: recover() undoes it
        (False, "new-in-place", "new"),
    ],
)
def test_a_crash_at_any_step_of_replace_dir_leaves_old_or_new(tmp_path: Path, swap: bool, step: str, expected):
    target = tmp_path / "prepared" / "sst2"
    _folder(target, "old")
    staging = tmp_path / "prepared" / "sst2.partial"
    _folder(staging, "new")
    code = (
        f"atomic.replace_dir(__import__('pathlib').Path({str(staging)!r}), __import__('pathlib').Path({str(target)!r}))"
    )
    assert _run_until(step, code, swap) == CRASH
    from bertops.atomic import recover, replace_dir, staging_dir

    assert _version(target) == expected
    if expected is None:  # the old copy waits beside it, and any reader that recovers gets it back
        assert _version(target.with_name("sst2.old")) == "old"
        recover(target)
        assert _version(target) == "old"
    # The next write starts from a consistent state: it never deletes the only copy and leaves no debris.
    again = staging_dir(target)
    _folder(again, "newer")
    replace_dir(again, target)
    assert _version(target) == "newer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["sst2"]


@pytest.mark.parametrize("step", ["registry-written", "registry-committed"])
def test_a_crash_at_any_step_of_a_registry_write_leaves_old_or_new(tmp_path: Path, step: str):
    from bertops.registry import Registry

    registry = Registry.at(tmp_path)
    registry.register("m", "v1", {"gate": {"approved": True}})
    code = f"r = registry.Registry({registry.url!r})\nr.promote('m', 'v1', reason='crash test')"
    assert _run_until(step, code) == CRASH
    if step == "registry-written":  # died inside the transaction: the database rolled it back
        assert registry.production("m") is None
        assert [e["action"] for e in registry.history("m")] == ["register"]
    else:
        assert registry.production("m") == "v1"
    registry.register("m", "v2", {"gate": {"approved": True}})  # the lock died with the writer
    assert set(registry.versions("m")) == {"v1", "v2"}
