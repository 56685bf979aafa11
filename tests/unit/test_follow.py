"""The endpoint's follower over a real registry database and a real model store folder: it switches
when production moves, refuses an altered or missing artifact and keeps serving, and survives an
unreachable database."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertops.follow import Follower
from bertops.model_store import ModelStore, StoreError
from bertops.registry import Registry

APPROVED = {"approved": True}


@pytest.fixture
def team(tmp_path: Path):
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    store = ModelStore(str(tmp_path / "store"), tmp_path / "cache")
    for version in ("v1", "v2"):
        folder = tmp_path / "built" / version
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(version.encode() * 100)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text(f'{{"version": "{version}"}}')
        registry.register("m", version, {"gate": APPROVED, "artifact": store.put("m", version, folder)})
    registry.promote("m", "v1")
    return registry, store


class Service:
    """Stands in for the endpoint: records what it was asked to load; refuses versions in `bad`."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []
        self.bad: set[str] = set()

        self.trials: dict = {}

    def switch(self, version: str, path: Path) -> None:
        if version in self.bad:
            raise RuntimeError(f"{version} does not load")
        self.loaded.append((version, (path / "weights.bin").read_text()[:2]))

    def set_trial(self, role: str, version, path, percent) -> None:
        if version in self.bad:
            raise RuntimeError(f"{version} does not load")
        self.trials[role] = (version, percent) if version else None


def test_it_switches_only_when_production_moves(team):
    registry, store = team
    service = Service()
    follower = Follower("m", registry, store, service, "v1", poll_s=60)
    assert follower.check()["serving"] == "v1" and service.loaded == []  # nothing moved
    registry.promote("m", "v2")
    status = follower.check()
    assert status["serving"] == "v2" and status["error"] is None and status["switched_at"]
    assert service.loaded == [("v2", "v2")]  # the store's bytes of v2, unpacked
    registry.rollback("m")
    assert follower.check()["serving"] == "v1" and service.loaded[-1] == ("v1", "v1")


def test_an_altered_artifact_is_refused_and_the_current_version_keeps_serving(team, tmp_path: Path):
    registry, store = team
    tar = tmp_path / "store" / "m" / "v2.tar"
    tar.write_bytes(tar.read_bytes() + b"tampered")
    service = Service()
    follower = Follower("m", registry, store, service, "v1", poll_s=60)
    registry.promote("m", "v2")
    status = follower.check()
    assert status["serving"] == "v1" and service.loaded == []
    assert "does not match the registry" in status["error"] and "v2" in status["refused"]
    assert not (tmp_path / "cache" / "m").exists() or not any((tmp_path / "cache" / "m").glob("v2-*"))
    with pytest.raises(StoreError, match="does not match"):
        store.fetch("m", "v2", registry.versions("m")["v2"]["artifact"]["sha256"])


def test_a_missing_artifact_or_a_model_that_fails_to_load_is_refused(team, tmp_path: Path):
    registry, store = team
    service = Service()
    service.bad.add("v2")
    follower = Follower("m", registry, store, service, "v1", poll_s=60)
    registry.promote("m", "v2")
    assert "does not load" in follower.check()["error"]
    follower.check()  # a refused version is not fetched and loaded again on every poll
    assert follower.status()["error"] is None and follower.current == "v1"
    import shutil

    service.bad.clear()
    (tmp_path / "store" / "m" / "v2.tar").unlink()
    for cached in (tmp_path / "cache" / "m").glob("v2-*"):
        shutil.rmtree(cached)
    status = follower.check(retry_refused=True)  # what an admin reload does
    assert "missing from the model store" in status["error"] and follower.current == "v1" and service.loaded == []


def test_an_unreachable_database_leaves_the_endpoint_serving_until_it_returns(team):
    import socket

    registry, store = team
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = Service()
    follower = Follower("m", Registry(f"postgresql+psycopg://u:pw@127.0.0.1:{port}/db"), store, service, "v1", 60)
    status = follower.check()
    assert (
        status["serving"] == "v1"
        and "cannot use the registry database" in status["error"]
        and "pw" not in status["error"]
    )
    follower.registry = registry  # the database is back
    registry.promote("m", "v2")
    assert follower.check()["serving"] == "v2" and follower.status()["error"] is None


def test_the_store_keeps_files_whole_and_the_cache_unpacks_once(team, tmp_path: Path):
    registry, store = team
    sha = registry.versions("m")["v1"]["artifact"]["sha256"]
    first = store.fetch("m", "v1", sha)
    assert (first / "sub" / "config.json").read_text() == '{"version": "v1"}'
    (tmp_path / "store" / "m" / "v1.tar").unlink()  # served from the cache from now on
    assert store.fetch("m", "v1", sha) == first
    assert not list((tmp_path / "store" / "m").glob("*.partial"))


def test_it_follows_a_canary_and_a_shadow_and_their_end(team):
    registry, store = team
    service = Service()
    follower = Follower("m", registry, store, service, "v1", poll_s=60)
    registry.start_trial("m", "v2", 10)
    status = follower.check()
    assert service.trials == {"canary": ("v2", 10)} and (status["canary"], status["canary_percent"]) == ("v2", 10)
    registry.withdraw("m")
    registry.start_trial("m", "v2", None)
    status = follower.check()
    assert service.trials == {"canary": None, "shadow": ("v2", None)} and status["shadow"] == "v2"
    registry.promote("m", "v2")  # completes the shadow: v2 serves, no trial left
    status = follower.check()
    assert status["serving"] == "v2" and status["shadow"] is None and service.trials["shadow"] is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_withdraws_a_slow_or_failing_canary_and_only_then():
    from bertops.follow import CanaryWatch

    clock = Clock()
    watch = CanaryWatch(window_s=60, min_requests=20, max_error_rate=0.05, max_p95_ratio=2.0, clock=clock)
    for _ in range(100):
        watch.record("prod", 0.010, True)
    for _ in range(19):
        watch.record("canary", 0.100, True)
    assert watch.verdict("canary", "prod") is None  # too few canary requests to judge
    watch.record("canary", 0.100, True)
    reason = watch.verdict("canary", "prod")
    assert "p95 latency 100.0 ms is 10.00x production's 10.0 ms" in reason and "max_p95_ratio 2" in reason
    clock.now = 61  # the window moves on: old evidence is forgotten
    assert watch.verdict("canary", "prod") is None
    for i in range(40):
        watch.record("prod", 0.010, True)
        watch.record("canary", 0.012, i % 10 != 0)  # 10% errors, latency fine
    assert "error rate 10.0%" in watch.verdict("canary", "prod")
    healthy = CanaryWatch(60, 20, 0.05, 2.0, clock=clock)
    for _ in range(40):
        healthy.record("prod", 0.010, True)
        healthy.record("canary", 0.015, True)
    assert healthy.verdict("canary", "prod") is None


def test_an_unhealthy_canary_is_withdrawn_in_the_registry_by_auto(team):
    from bertops.follow import CanaryWatch

    registry, store = team
    service = Service()
    watch = CanaryWatch(60, 5, 0.0, 2.0)
    follower = Follower("m", registry, store, service, "v1", poll_s=60, watch=watch)
    registry.start_trial("m", "v2", 50)
    follower.check()
    for _ in range(5):
        watch.record("m:v1", 0.01, True)  # versions as the answers name them
        watch.record("m:v2", 0.01, False)
    status = follower.check()
    assert status["canary"] is None and "error rate 100.0%" in status["withdrawn"]
    assert service.trials["canary"] is None and registry.routing("m").canary is None
    last = registry.history("m")[-1]
    assert (last["action"], last["who"], last["version"]) == ("withdraw", "auto", "v2")
    assert "error rate" in last["reason"] and registry.production("m") == "v1"


def test_every_worker_shows_the_last_drift_check_the_monitor_left_in_the_store(team):
    """`bertops monitor` posts its scores to one worker (or to none without the admin token) and
    writes them to the model store; every follower picks them up once, on its next look."""
    from bertops.model_store import DRIFT_REPORT_KEY

    registry, store = team

    class Watched(Service):
        def __init__(self) -> None:
            super().__init__()
            self.drift: list[dict] = []

        def record_drift(self, report: dict) -> None:
            self.drift.append(report)

    workers = [Watched(), Watched()]
    followers = [Follower("m", registry, store, w, "v1", poll_s=60) for w in workers]
    for follower in followers:
        follower.check()
    assert all(w.drift == [] for w in workers)  # no check yet
    report = {"version": "m:v1", "verdict": "drift", "drifted": ["tokens"], "checked_at": "2026-12-05T01:00:00Z"}
    store.write_state("m", DRIFT_REPORT_KEY, report)
    for follower in followers:
        follower.check()
        follower.check()  # the same check is shown once
    assert all(w.drift == [report] for w in workers)
    newer = {**report, "verdict": "ok", "drifted": [], "checked_at": "2026-12-05T02:00:00Z"}
    store.write_state("m", DRIFT_REPORT_KEY, newer)
    assert followers[0].check()["error"] is None and workers[0].drift[-1]["verdict"] == "ok"
    (Path(store.url) / "m" / f"{DRIFT_REPORT_KEY}.json").write_text("{not json")  # a damaged file: following goes on
    assert followers[1].check()["error"] is None and workers[1].drift == [report]
