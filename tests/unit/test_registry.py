import json
import multiprocessing as mp
from pathlib import Path

import pytest

from bertops.registry import Registry, RegistryError

APPROVED = {"gate": {"approved": True}}


def test_register_promote_archive_and_history(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register("m", "v1", APPROVED)
    reg.register("m", "v2", APPROVED)
    assert reg.promote("m", "v1") is None
    assert reg.promote("m", "v2", reason="better") == "v1"
    versions = reg.versions("m")
    assert reg.production("m") == "v2"
    assert versions["v1"]["stage"] == "archived" and versions["v2"]["stage"] == "production"
    assert [e["action"] for e in reg.history("m")] == ["register", "register", "promote", "promote"]
    assert reg.history("m")[-1]["reason"] == "better" and reg.history("m")[-1]["who"]


def test_rollback_returns_to_the_previous_production(tmp_path: Path):
    reg = Registry(tmp_path)
    for v in ("v1", "v2"):
        reg.register("m", v, APPROVED)
        reg.promote("m", v)
    assert reg.rollback("m", reason="bad latency") == "v1"
    assert reg.production("m") == "v1" and reg.versions("m")["v2"]["stage"] == "archived"
    with pytest.raises(RegistryError, match="no earlier production"):
        reg.rollback("m")


def test_promotion_needs_a_positive_gate_or_a_forced_reason(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register("m", "bad", {"gate": {"approved": False}})
    reg.register("m", "ungated", {})
    with pytest.raises(RegistryError, match="negative gate decision"):
        reg.promote("m", "bad")
    with pytest.raises(RegistryError, match="no gate decision"):
        reg.promote("m", "ungated")
    with pytest.raises(RegistryError, match="--reason"):
        reg.promote("m", "bad", force=True)
    assert reg.production("m") is None
    reg.promote("m", "bad", force=True, reason="hotfix approved by on-call")
    assert reg.history("m")[-1]["forced"] is True


def test_unknown_version_is_named(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register("m", "v1", APPROVED)
    with pytest.raises(RegistryError, match="no version 'v9'.*v1"):
        reg.promote("m", "v9")


def test_a_crash_inside_an_update_leaves_the_old_state(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register("m", "v1", APPROVED)
    before = reg.file.read_text()
    with pytest.raises(ZeroDivisionError):
        with reg._transaction() as state:
            state["models"]["m"]["production"] = "v1"
            1 / 0  # noqa: B018 (the crash inside the transaction)
    assert reg.file.read_text() == before
    assert not list(tmp_path.glob(".registry-*"))


def _promote_many(root: str, versions: list[str]) -> None:
    reg = Registry(Path(root))
    for v in versions:
        reg.promote("m", v)


def test_concurrent_promotions_leave_a_consistent_state(tmp_path: Path):
    reg = Registry(tmp_path)
    versions = [f"v{i}" for i in range(12)]
    for v in versions:
        reg.register("m", v, APPROVED)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_promote_many, args=(str(tmp_path), versions[i::3])) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    state = json.loads(reg.file.read_text())["models"]["m"]
    in_production = [v for v, r in state["versions"].items() if r["stage"] == "production"]
    assert in_production == [state["production"]]  # exactly one, and it is the pointer
    assert sum(e["action"] == "promote" for e in state["history"]) == 12


def test_repeated_rollbacks_walk_back_through_production_versions(tmp_path: Path):
    reg = Registry(tmp_path)
    for v in ("v1", "v2", "v3"):
        reg.register("m", v, APPROVED)
        reg.promote("m", v)
    assert reg.rollback("m") == "v2"
    assert reg.rollback("m") == "v1"
    assert reg.production("m") == "v1"


def _promote_forever(root: str, versions: list[str]) -> None:
    reg = Registry(Path(root))
    while True:
        for v in versions:
            reg.promote("m", v)


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.25])
def test_killing_a_process_mid_promotion_leaves_a_consistent_registry(tmp_path: Path, delay: float):
    import os
    import signal
    import time

    reg = Registry(tmp_path)
    versions = [f"v{i}" for i in range(6)]
    for v in versions:
        reg.register("m", v, APPROVED)
    proc = mp.get_context("fork").Process(target=_promote_forever, args=(str(tmp_path), versions))
    proc.start()
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: like a crash or power loss
    proc.join()
    state = json.loads(reg.file.read_text())["models"]["m"]  # always parseable: old or new, never half
    production = [v for v, r in state["versions"].items() if r["stage"] == "production"]
    assert production == ([state["production"]] if state["production"] else [])
    # The lock died with the process: the next promotion goes through.
    reg.promote("m", "v0", reason="after the crash")
    assert reg.production("m") == "v0"
    assert not list(tmp_path.glob(".registry-*.json"))  # a dead writer's temp file is swept
