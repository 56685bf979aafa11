"""The model registry: versions, stages (candidate -> production -> archived), lineage and the
promotion history, in one JSON file.

Every change happens under an exclusive file lock and is written with an atomic rename, so a
crash leaves the old or the new state, never a mix, and concurrent promotions serialise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertops.atomic import fsync_dir
from bertops.errors import BertopsError

STAGES = ("candidate", "staging", "production", "archived")


class RegistryError(BertopsError, RuntimeError):
    """A registry operation that cannot be done; the message says why and what to do."""


@dataclass
class Registry:
    root: Path  # the registry folder (paths.registry)

    @property
    def file(self) -> Path:
        return self.root / "registry.json"

    # -- storage ------------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        if not self.file.is_file():
            return {"models": {}}
        try:
            return json.loads(self.file.read_text())
        except json.JSONDecodeError as exc:
            raise RegistryError(
                f"{self.file} is not valid JSON ({exc.msg}); restore it from a backup or git/DVC"
            ) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[dict[str, Any]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for stale in self.root.glob(".registry-*.json"):  # left by a writer that died mid-update
                stale.unlink(missing_ok=True)
            state = self.read()
            yield state
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".registry-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump(state, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            _step("registry-written")
            os.replace(tmp, self.file)  # readers see the old file or the new one, whole
            _step("registry-replaced")
            fsync_dir(self.root)  # the rename itself survives a power loss

    # -- queries ------------------------------------------------------------------------------
    def versions(self, name: str) -> dict[str, dict[str, Any]]:
        return self.read()["models"].get(name, {}).get("versions", {})

    def production(self, name: str) -> str | None:
        return self.read()["models"].get(name, {}).get("production")

    def history(self, name: str) -> list[dict[str, Any]]:
        return self.read()["models"].get(name, {}).get("history", [])

    # -- changes ------------------------------------------------------------------------------
    def register(self, name: str, version: str, record: dict[str, Any]) -> None:
        """Add a packaged model version as a candidate."""
        with self._transaction() as state:
            model = state["models"].setdefault(name, {"versions": {}, "production": None, "history": []})
            model["versions"][version] = {**record, "stage": "candidate", "registered_at": _now()}
            model["history"].append(_event("register", version, None, "packaged", stage="candidate"))

    def promote(
        self, name: str, version: str, stage: str = "production", reason: str = "", force: bool = False
    ) -> str | None:
        """Move `version` to `stage`; the previous production version is archived. Returns it."""
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; choose one of {STAGES}")
        with self._transaction() as state:
            model = state["models"].get(name)
            if model is None or version not in model["versions"]:
                known = sorted(model["versions"]) if model else []
                raise RegistryError(f"model {name!r} has no version {version!r}; known versions: {known}")
            record = model["versions"][version]
            gate = record.get("gate") or {}
            if stage == "production" and not gate.get("approved") and not force:
                raise RegistryError(
                    f"{name}:{version} has {'no' if not gate else 'a negative'} gate decision; run `bertops gate` "
                    "or pass --force with --reason to promote anyway (the reason is recorded)"
                )
            if force and not reason:
                raise RegistryError("--force needs --reason: say why the gate is overridden")
            previous = model.get("production")
            if stage == "production":
                if previous and previous != version:
                    model["versions"][previous]["stage"] = "archived"
                model["production"] = version
            elif model.get("production") == version:
                model["production"] = None
            record["stage"] = stage
            model["history"].append(_event("promote", version, previous, reason or stage, forced=force, stage=stage))
            return previous

    def rollback(self, name: str, reason: str = "") -> str:
        """Re-promote the production version that came before the current one."""
        with self._transaction() as state:
            model = state["models"].get(name)
            current = model and model.get("production")
            if not current:
                raise RegistryError(f"model {name!r} has no production version to roll back from")
            stack = production_stack(model["history"])
            if len(stack) < 2:
                raise RegistryError(f"{name}:{current} has no earlier production version to roll back to")
            target = stack[-2]
            model["versions"][current]["stage"] = "archived"
            model["versions"][target]["stage"] = "production"
            model["production"] = target
            model["history"].append(_event("rollback", target, current, reason or "rollback"))
            return target


def production_stack(history: list[dict[str, Any]]) -> list[str]:
    """Replay the history: a promotion to production pushes a version, a rollback pops one."""
    stack: list[str] = []
    for event in history:
        if event["action"] == "promote" and event.get("stage", "production") == "production":
            if not stack or stack[-1] != event["version"]:
                stack.append(event["version"])
        elif event["action"] == "rollback" and stack:
            stack.pop()
    return stack


def _step(name: str) -> None:
    """A named point between two steps of a write (the crash tests stop a process at each one)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _event(
    action: str, version: str, previous: str | None, reason: str, forced: bool = False, stage: str = "production"
) -> dict[str, Any]:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return {
        "action": action,
        "version": version,
        "stage": stage,
        "previous": previous,
        "reason": reason,
        "forced": forced,
        "who": who,
        "when": _now(),
    }
