"""The registry on a real database: every test runs against the embedded SQLite file and against
a real PostgreSQL server (tests/postgres.py), each test on a database of its own."""

import json
import multiprocessing as mp
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from bertops.registry import Registry, RegistryError, masked, versions_table

APPROVED = {"gate": {"approved": True}}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    server = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with sa.create_engine(server, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    return server.rsplit("/", 1)[0] + f"/{name}"


def test_register_promote_archive_and_history(url: str):
    reg = Registry(url)
    reg.register("m", "v1", APPROVED)
    reg.register("m", "v2", APPROVED)
    assert reg.promote("m", "v1") is None
    assert reg.promote("m", "v2", reason="better") == "v1"
    versions = reg.versions("m")
    assert reg.production("m") == "v2"
    assert versions["v1"]["stage"] == "archived" and versions["v2"]["stage"] == "production"
    assert versions["v2"]["gate"] == {"approved": True}
    assert [e["action"] for e in reg.history("m")] == ["register", "register", "promote", "promote"]
    assert reg.history("m")[-1]["reason"] == "better" and reg.history("m")[-1]["who"]


def test_every_change_moves_the_revision_that_endpoints_poll(url: str):
    reg = Registry(url)
    assert reg.state("m") == (None, 0)
    reg.register("m", "v1", APPROVED)
    _, after_register = reg.state("m")
    reg.promote("m", "v1")
    production, after_promote = reg.state("m")
    assert production == "v1" and after_promote > after_register > 0
    with pytest.raises(RegistryError):
        reg.promote("m", "v9")
    assert reg.state("m") == ("v1", after_promote)  # a refused change moves nothing


def test_rollback_returns_to_the_previous_production(url: str):
    reg = Registry(url)
    for v in ("v1", "v2"):
        reg.register("m", v, APPROVED)
        reg.promote("m", v)
    assert reg.rollback("m", reason="bad latency") == "v1"
    assert reg.production("m") == "v1" and reg.versions("m")["v2"]["stage"] == "archived"
    with pytest.raises(RegistryError, match="no earlier production"):
        reg.rollback("m")


def test_repeated_rollbacks_walk_back_through_production_versions(url: str):
    reg = Registry(url)
    for v in ("v1", "v2", "v3"):
        reg.register("m", v, APPROVED)
        reg.promote("m", v)
    assert reg.rollback("m") == "v2"
    assert reg.rollback("m") == "v1"
    assert reg.production("m") == "v1"


def test_promotion_needs_a_positive_gate_or_a_forced_reason(url: str):
    reg = Registry(url)
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


def test_unknown_and_duplicate_versions_are_named(url: str):
    reg = Registry(url)
    reg.register("m", "v1", APPROVED)
    with pytest.raises(RegistryError, match="no version 'v9'.*v1"):
        reg.promote("m", "v9")
    with pytest.raises(RegistryError, match="m:v1 is already registered"):
        reg.register("m", "v1", {"gate": {"approved": False}})
    assert reg.versions("m")["v1"]["gate"] == {"approved": True}  # the first record stands


def test_the_database_itself_allows_one_production_version_per_model(url: str):
    reg = Registry(url)
    for v in ("v1", "v2"):
        reg.register("m", v, APPROVED)
    reg.promote("m", "v1")
    with pytest.raises(sa.exc.IntegrityError), reg.engine.begin() as conn:  # a writer that skips the API
        conn.execute(versions_table.update().where(versions_table.c.version == "v2").values(stage="production"))
    assert [v for v, r in reg.versions("m").items() if r["stage"] == "production"] == ["v1"]


def test_a_failure_inside_a_change_leaves_the_old_state(url: str):
    reg = Registry(url)
    reg.register("m", "v1", APPROVED)
    with pytest.raises(ZeroDivisionError):
        with reg._change("m") as (conn, _):
            conn.execute(versions_table.update().values(stage="production"))
            1 / 0  # noqa: B018 (the crash inside the transaction)
    assert reg.versions("m")["v1"]["stage"] == "candidate" and reg.production("m") is None


def _promote_many(url: str, versions: list[str]) -> None:
    reg = Registry(url)
    for v in versions:
        reg.promote("m", v)


def test_concurrent_promotions_from_many_processes_leave_one_production(url: str):
    reg = Registry(url)
    versions = [f"v{i}" for i in range(12)]
    for v in versions:
        reg.register("m", v, APPROVED)
    ctx = mp.get_context("spawn")  # separate processes, separate connections: like separate machines
    procs = [ctx.Process(target=_promote_many, args=(url, versions[i::3])) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    in_production = [v for v, r in reg.versions("m").items() if r["stage"] == "production"]
    assert in_production == [reg.production("m")]  # exactly one, and it is the pointer
    assert sum(e["action"] == "promote" for e in reg.history("m")) == 12  # every history entry kept


def _promote_forever(url: str, versions: list[str]) -> None:
    reg = Registry(url)
    while True:
        for v in versions:
            reg.promote("m", v)


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_killing_a_process_mid_promotion_leaves_a_consistent_registry(url: str, delay: float):
    reg = Registry(url)
    versions = [f"v{i}" for i in range(6)]
    for v in versions:
        reg.register("m", v, APPROVED)
    proc = mp.get_context("spawn").Process(target=_promote_forever, args=(url, versions))
    proc.start()
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: like a crash or power loss
    proc.join()
    production = [v for v, r in reg.versions("m").items() if r["stage"] == "production"]
    assert production == ([reg.production("m")] if reg.production("m") else [])
    promotions = [e for e in reg.history("m") if e["action"] == "promote"]
    assert not promotions or promotions[-1]["version"] == reg.production("m")  # history and pointer agree
    reg.promote("m", "v0", reason="after the crash")  # the dead writer's lock went with it
    assert reg.production("m") == "v0"


def _legacy_event(action: str, version: str, previous, reason: str, who: str, when: str, forced=False) -> dict:
    stage = "candidate" if action == "register" else "production"
    return {"action": action, "version": version, "stage": stage, "previous": previous, "reason": reason,
            "forced": forced, "who": who, "when": f"2026-01-0{when}+00:00"}  # fmt: skip


def test_an_old_registry_json_is_imported_once_with_nothing_lost(tmp_path: Path):
    day = "2026-01-0{}T00:00:00+00:00"
    legacy = {
        "models": {
            "m": {
                "production": "v2",
                "versions": {
                    "v1": {**APPROVED, "bento_tag": "m:v1", "stage": "archived", "registered_at": day.format(1)},
                    "v2": {**APPROVED, "bento_tag": "m:v2", "stage": "production", "registered_at": day.format(2)},
                },
                "history": [
                    _legacy_event("register", "v1", None, "packaged", "ann", "1T00:00:00"),
                    _legacy_event("promote", "v1", None, "first", "ann", "1T00:01:00"),
                    _legacy_event("register", "v2", None, "packaged", "bob", "2T00:00:00"),
                    _legacy_event("promote", "v2", "v1", "better", "bob", "2T00:01:00", forced=True),
                ],
            }
        }
    }
    (tmp_path / "registry.json").write_text(json.dumps(legacy))
    reg = Registry.at(tmp_path)
    assert reg.production("m") == "v2"
    assert reg.versions("m") == legacy["models"]["m"]["versions"]
    assert reg.history("m") == legacy["models"]["m"]["history"]
    assert reg.rollback("m") == "v1"  # the imported history drives rollbacks
    again = Registry.at(tmp_path)  # a second open (another command) imports nothing twice
    assert again.production("m") == "v1" and len(again.history("m")) == 5
    assert (tmp_path / "registry.json").is_file()  # the old file stays as it was


def test_an_unreachable_database_fails_fast_naming_the_url_without_its_password():
    with socket_closed() as port:
        reg = Registry(f"postgresql+psycopg://team:s3cret@127.0.0.1:{port}/bertops")
        started = time.monotonic()
        with pytest.raises(RegistryError) as err:
            reg.production("m")
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert f"postgresql+psycopg://team:***@127.0.0.1:{port}/bertops" in message and "s3cret" not in message
    assert "BERTOPS_REGISTRY_URL" in message and "nothing was changed" in message


def test_a_url_that_is_not_a_database_is_named():
    with pytest.raises(RegistryError, match="not a database URL"):
        Registry("registry/registry.json").production("m")
    assert masked("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


class socket_closed:
    """A loopback port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


def test_a_canary_is_started_completed_or_withdrawn_and_the_history_says_who(url: str):
    reg = Registry(url)
    for v in ("v1", "v2", "v3"):
        reg.register("m", v, APPROVED)
    reg.register("m", "bad", {"gate": {"approved": False}})
    with pytest.raises(RegistryError, match="no production version"):
        reg.start_trial("m", "v2", 10)
    reg.promote("m", "v1")
    routing = reg.start_trial("m", "v2", 10, reason="try it")
    assert (routing.production, routing.canary, routing.canary_percent, routing.shadow) == ("v1", "v2", 10, None)
    assert reg.routing("m").revision == routing.revision
    with pytest.raises(RegistryError, match="negative gate decision, so it gets no canary traffic"):
        reg.start_trial("m", "bad", 10)
    with pytest.raises(RegistryError, match="already production"):
        reg.start_trial("m", "v1", 10)
    for share in (0, 100, -5):
        with pytest.raises(RegistryError, match="above 0 and below 100"):
            reg.start_trial("m", "v3", share)
    reg.promote("m", "v2")  # completes the rollout
    done = reg.routing("m")
    assert (done.production, done.canary, done.canary_percent) == ("v2", None, None)
    assert reg.history("m")[-1]["reason"] == "completes the canary"

    reg.start_trial("m", "v3", 5)
    reg.start_trial("m", "bad", None, reason="see how it disagrees", force=True)  # a forced shadow
    assert (reg.routing("m").canary, reg.routing("m").shadow) == ("v3", "bad")
    assert reg.withdraw("m", reason="p95 over the limit", who="auto") == ["v3", "bad"]
    after = reg.routing("m")
    assert (after.production, after.canary, after.shadow) == ("v2", None, None)
    last = reg.history("m")[-2:]
    assert [(e["action"], e["stage"], e["who"], e["version"]) for e in last] == [
        ("withdraw", "canary", "auto", "v3"),
        ("withdraw", "shadow", "auto", "bad"),
    ]
    assert reg.history("m")[-3]["forced"] is True and reg.history("m")[-3]["action"] == "shadow"
    assert reg.production("m") == "v2"  # withdrawing never touches production


def test_a_database_of_an_older_schema_is_migrated_in_place_with_its_data(url: str):
    from alembic import command

    from bertops import registry as module

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(module._alembic_config(conn), "0001")  # the schema before canary and shadow
        conn.execute(sa.text("INSERT INTO registry_models (name, production, revision) VALUES ('m', NULL, 1)"))
    engine.dispose()
    reg = Registry(url)
    assert reg.routing("m").revision == 1 and reg.routing("m").canary is None  # upgraded, nothing lost
    with reg.engine.connect() as conn:
        version = conn.execute(sa.text(f"SELECT version_num FROM {module.VERSION_TABLE}")).scalar_one()
    assert version == "0002"


def test_each_committed_change_is_announced_once_and_a_refused_one_never(url: str):
    seen: list[tuple[str, str, str]] = []
    reg = Registry(url, on_event=lambda name, event: seen.append((name, event["action"], event["version"])))
    reg.register("m", "v1", APPROVED)
    reg.register("m", "v2", {"gate": {"approved": False}})
    reg.promote("m", "v1")
    with pytest.raises(RegistryError):
        reg.promote("m", "v2")  # refused inside the transaction: rolled back, nothing announced
    reg.start_trial("m", "v2", 10, reason="look", force=True)
    reg.withdraw("m", who="auto")
    assert seen == [
        ("m", "register", "v1"),
        ("m", "register", "v2"),
        ("m", "promote", "v1"),
        ("m", "canary", "v2"),
        ("m", "withdraw", "v2"),
    ]


def test_prune_keeps_what_serving_and_rollback_need_and_refuses_pruned_versions(url: str):
    """v1..v3 promoted in turn (production v3; rollback walks v2, v1), v4 staging, v5 a canary,
    v6 and v7 candidates: with the newest 1 and the last 2 production versions kept, v1 and v6 go."""
    reg = Registry(url)
    for v in ("v1", "v2", "v3", "v4", "v5", "v6", "v7"):
        reg.register("m", v, APPROVED)
    for v in ("v1", "v2", "v3"):
        reg.promote("m", v)
    reg.promote("m", "v4", stage="staging")
    reg.start_trial("m", "v5", canary_percent=10)
    revision = reg.state("m")[1]

    assert reg.prune("m", keep_newest=1, keep_rollbacks=2, dry_run=True) == ["v1", "v6"]
    assert reg.state("m")[1] == revision and "pruned" not in {r["stage"] for r in reg.versions("m").values()}
    assert reg.prune("m", keep_newest=1, keep_rollbacks=2) == ["v1", "v6"]
    stages = {v: r["stage"] for v, r in reg.versions("m").items()}
    assert stages == {"v1": "pruned", "v2": "archived", "v3": "production", "v4": "staging",
                      "v5": "candidate", "v6": "pruned", "v7": "candidate"}  # fmt: skip
    assert [e["version"] for e in reg.history("m") if e["action"] == "prune"] == ["v1", "v6"]
    assert reg.prune("m", keep_newest=1, keep_rollbacks=2) == []  # nothing more to do

    for refused in (
        lambda: reg.promote("m", "v6"),
        lambda: reg.promote("m", "v1", stage="staging"),
        lambda: reg.start_trial("m", "v6", canary_percent=5),
        lambda: reg.start_trial("m", "v1"),
    ):
        with pytest.raises(RegistryError, match="was pruned .* package that model again"):
            refused()
    assert reg.rollback("m") == "v2"  # the kept rollback target
    with pytest.raises(RegistryError, match="m:v1 was pruned .* cannot be rolled back to"):
        reg.rollback("m")
    assert reg.production("m") == "v2"
    with pytest.raises(RegistryError, match="keep at least the production version"):
        reg.prune("m", keep_newest=1, keep_rollbacks=0)
