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

    def switch(self, version: str, path: Path) -> None:
        if version in self.bad:
            raise RuntimeError(f"{version} does not load")
        self.loaded.append((version, (path / "weights.bin").read_text()[:2]))


def test_it_switches_only_when_production_moves(team):
    registry, store = team
    service = Service()
    follower = Follower("m", registry, store, service.switch, "v1", poll_s=60)
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
    follower = Follower("m", registry, store, service.switch, "v1", poll_s=60)
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
    follower = Follower("m", registry, store, service.switch, "v1", poll_s=60)
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
    follower = Follower("m", Registry(f"postgresql+psycopg://u:pw@127.0.0.1:{port}/db"), store, service.switch, "v1", 60)
    status = follower.check()
    assert status["serving"] == "v1" and "cannot use the registry database" in status["error"] and "pw" not in status["error"]
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
