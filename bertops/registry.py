"""The model registry: versions, stages (candidate -> production -> archived), lineage, gate
decisions and the promotion history, in a SQL database through SQLAlchemy 2.

Where it lives: `BERTOPS_REGISTRY_URL`, else the `registry.url` setting, else an embedded SQLite
file `<paths.registry>/registry.db` (no server needed). A team points every machine at one
PostgreSQL database (`postgresql+psycopg://user:pass@host/db`). Alembic owns the schema
(`bertops/migrations/`): opening a registry brings its database to the latest revision.

The database enforces what the old JSON file enforced by hand: a partial unique index allows one
production version per model name; every change is one transaction that starts by taking the
model's row lock (an upsert that bumps `registry_models.revision`), so concurrent promotions from
many machines serialise, and a crash leaves the old state or the new one. Endpoints poll the
revision to notice a promotion cheaply.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import urllib.parse
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bertops.errors import BertopsError, TransientError

STAGES = ("candidate", "staging", "production", "archived")  # canary and shadow are roles, not stages
PRUNED = "pruned"  # a version whose artifact `prune` deleted: listed and in the history, never served again
URL_ENV = "BERTOPS_REGISTRY_URL"
VERSION_TABLE = "bertops_alembic_version"  # not Prefect's alembic_version: one database may hold both
CONNECT_TIMEOUT_S = 5

metadata = sa.MetaData()
models_table = sa.Table(
    "registry_models",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("production", sa.String(200), nullable=True),
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),  # bumped by every change
    sa.Column("canary", sa.String(200), nullable=True),  # a version taking canary_percent of the requests
    sa.Column("canary_percent", sa.Float, nullable=True),
    sa.Column("shadow", sa.String(200), nullable=True),  # a version run on every request, answers discarded
)
versions_table = sa.Table(
    "registry_versions",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(200), primary_key=True),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("registered_at", sa.String(40), nullable=False),
    sa.Column("record", sa.JSON, nullable=False),
    sa.Index(
        "one_production_per_model",
        "name",
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    ),
)
history_table = sa.Table(
    "registry_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("previous", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)
imports_table = sa.Table(  # legacy registry.json files already imported (each once)
    "registry_imports",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)


class RegistryError(BertopsError, RuntimeError):
    """A registry operation that cannot be done; the message says why and what to do."""


class RegistryUnreachable(RegistryError, TransientError):
    """The registry database cannot be reached (now); a retry may succeed."""


def default_url(registry_dir: Path) -> str:
    return f"sqlite:///{Path(registry_dir).resolve() / 'registry.db'}"


def resolve_url(setting: str | None, registry_dir: Path) -> str:
    """BERTOPS_REGISTRY_URL, else the `registry.url` setting, else the embedded SQLite file."""
    return os.environ.get(URL_ENV) or setting or default_url(registry_dir)


def masked(url: str) -> str:
    """The URL with any password in it hidden, for messages and logs (database and store URLs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return url


_engines: dict[tuple[str, int], sa.Engine] = {}  # per process: a forked child never shares a pool
_migrated: set[str] = set()


def _engine(url: str) -> sa.Engine:
    key = (url, os.getpid())
    if key in _engines:
        return _engines[key]
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise RegistryError(
            f"registry URL {url!r} is not a database URL; use e.g. sqlite:///registry/registry.db or "
            f"postgresql+psycopg://user:password@host:5432/bertops (set {URL_ENV} or registry.url)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_settings(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (polling endpoints) never block a promotion
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    else:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
        try:
            engine = sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise RegistryError(f"no driver for registry URL {masked(url)}: {exc}") from None
    _engines[key] = engine
    return engine


def _unreachable(url: str, exc: Exception) -> RegistryError:
    detail = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["no detail"])[0][:300]
    return RegistryUnreachable(
        f"cannot use the registry database {masked(url)}: {detail}. Check that it is running and "
        f"reachable, and that {URL_ENV} (or registry.url) names it; nothing was changed"
    )


@dataclass(frozen=True)
class Routing:
    """Where an endpoint sends requests: production, plus an optional canary and shadow."""

    production: str | None = None
    canary: str | None = None
    canary_percent: float | None = None
    shadow: str | None = None
    revision: int = 0


@dataclass
class Registry:
    """One registry database. `legacy_json`: a `registry.json` of an older bertops, imported once."""

    url: str
    legacy_json: Path | None = None
    on_event: Callable[[str, dict[str, Any]], None] | None = None  # (model, history entry) after each commit
    _ready: bool = field(default=False, repr=False)

    @classmethod
    def at(cls, registry_dir: Path, url: str | None = None, on_event=None) -> Registry:
        """The registry for a workspace's registry folder (URL resolved as `resolve_url` says)."""
        return cls(resolve_url(url, registry_dir), legacy_json=Path(registry_dir) / "registry.json", on_event=on_event)

    @property
    def engine(self) -> sa.Engine:
        engine = _engine(self.url)
        if not self._ready:
            with self._errors():
                if self.url not in _migrated:
                    upgrade(engine)
                    _migrated.add(self.url)
                if self.legacy_json is not None and self.legacy_json.is_file():
                    import_json(engine, self.legacy_json)
            self._ready = True
        return engine

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise _unreachable(self.url, exc) from None

    # -- queries ------------------------------------------------------------------------------
    def versions(self, name: str) -> dict[str, dict[str, Any]]:
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(versions_table).where(versions_table.c.name == name).order_by(versions_table.c.registered_at)
            )
            return {r.version: {**r.record, "stage": r.stage, "registered_at": r.registered_at} for r in rows}

    def production(self, name: str) -> str | None:
        return self.state(name)[0]

    def state(self, name: str) -> tuple[str | None, int]:
        """(production version, revision): the revision moves on every change."""
        routing = self.routing(name)
        return routing.production, routing.revision

    def routing(self, name: str) -> Routing:
        """Production, canary (with its share) and shadow: what an endpoint polls."""
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(sa.select(models_table).where(models_table.c.name == name)).first()
        if row is None:
            return Routing()
        return Routing(row.production, row.canary, row.canary_percent, row.shadow, row.revision)

    def history(self, name: str) -> list[dict[str, Any]]:
        with self._errors(), self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(history_table).where(history_table.c.name == name).order_by(history_table.c.id)
            )
            return [_event_dict(r) for r in rows]

    def names(self) -> list[str]:
        with self._errors(), self.engine.connect() as conn:
            return list(conn.execute(sa.select(models_table.c.name).order_by(models_table.c.name)).scalars())

    # -- changes ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _change(self, name: str) -> Iterator[tuple[sa.Connection, str | None]]:
        """One transaction holding `name`'s row lock; yields (connection, production version)."""
        with self._errors(), self.engine.begin() as conn:
            conn.info["bertops_events"] = []  # (the pooled connection's info outlives a transaction)
            production = _lock_model(conn, name)
            yield conn, production
            _step("registry-written")
            events = conn.info.pop("bertops_events", [])
        _step("registry-committed")
        if self.on_event is not None:
            for event in events:
                self.on_event(name, event)

    def register(self, name: str, version: str, record: dict[str, Any]) -> None:
        """Add a packaged model version as a candidate."""
        with self._change(name) as (conn, _):
            try:
                with conn.begin_nested():
                    conn.execute(
                        versions_table.insert().values(
                            name=name, version=version, stage="candidate", registered_at=_now(), record=record
                        )
                    )
            except sa.exc.IntegrityError:
                raise RegistryError(f"{name}:{version} is already registered; versions are immutable") from None
            _add_event(conn, name, "register", version, None, "packaged", stage="candidate")

    def promote(
        self, name: str, version: str, stage: str = "production", reason: str = "", force: bool = False
    ) -> str | None:
        """Move `version` to `stage`; the previous production version is archived. Returns it."""
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}; choose one of {STAGES}")
        if force and not reason:
            raise RegistryError("--force needs --reason: say why the gate is overridden")
        with self._change(name) as (conn, previous):
            record = _version(conn, name, version)
            _refuse_pruned(conn, name, version, f"promoted to {stage}")
            gate = record.get("gate") or {}
            if stage == "production" and not gate.get("approved") and not force:
                raise RegistryError(
                    f"{name}:{version} has {'no' if not gate else 'a negative'} gate decision; run `bertops gate` "
                    "or pass --force with --reason to promote anyway (the reason is recorded)"
                )
            if stage == "production":
                if previous and previous != version:
                    _set_stage(conn, name, previous, "archived")
                _set_stage(conn, name, version, "production")
                _set_production(conn, name, version)
                routing = _routing(conn, name)
                if version in (routing.canary, routing.shadow):  # the rollout completes
                    reason = reason or f"completes the {'canary' if version == routing.canary else 'shadow'}"
                    _set_trial(conn, name, canary=routing.canary != version, shadow=routing.shadow != version)
            else:
                if previous == version:
                    _set_production(conn, name, None)
                _set_stage(conn, name, version, stage)
            _add_event(conn, name, "promote", version, previous, reason or stage, forced=force, stage=stage)
            return previous

    def start_trial(
        self, name: str, version: str, canary_percent: float | None = None, reason: str = "", force: bool = False
    ) -> Routing:
        """Send `canary_percent`% of the requests to `version` (a canary), or, with None, run it on
        every request in the background without returning its answers (a shadow). The version
        must have passed the gate, unless forced with a reason."""
        role = "shadow" if canary_percent is None else "canary"
        if canary_percent is not None and not 0 < canary_percent < 100:
            raise RegistryError(
                f"--canary takes a share of the requests in percent, above 0 and below 100; got {canary_percent}"
            )
        if force and not reason:
            raise RegistryError("--force needs --reason: say why the gate is overridden")
        with self._change(name) as (conn, production):
            gate = _version(conn, name, version).get("gate") or {}
            _refuse_pruned(conn, name, version, f"given {role} traffic")
            if not gate.get("approved") and not force:
                raise RegistryError(
                    f"{name}:{version} has {'no' if not gate else 'a negative'} gate decision, so it gets no "
                    f"{role} traffic; run `bertops gate`, or pass --force with --reason (recorded)"
                )
            if version == production:
                raise RegistryError(f"{name}:{version} is already production; a {role} needs another version")
            if production is None:
                raise RegistryError(f"model {name!r} has no production version to run a {role} beside")
            values = {"canary": version, "canary_percent": canary_percent} if role == "canary" else {"shadow": version}
            conn.execute(models_table.update().where(models_table.c.name == name).values(**values))
            share = f"{canary_percent:g}% of requests" if role == "canary" else "every request, answers discarded"
            _add_event(
                conn,
                name,
                role,
                version,
                production,
                f"{share}; {reason}" if reason else share,
                forced=force,
                stage=role,
            )
            return _routing(conn, name)

    def withdraw(self, name: str, reason: str = "", who: str | None = None) -> list[str]:
        """End the canary and the shadow (production is untouched). Returns the withdrawn versions."""
        with self._change(name) as (conn, production):
            routing = _routing(conn, name)
            withdrawn = []
            for role, version in (("canary", routing.canary), ("shadow", routing.shadow)):
                if version:
                    _add_event(
                        conn, name, "withdraw", version, production, reason or f"{role} withdrawn", stage=role, who=who
                    )
                    withdrawn.append(version)
            _set_trial(conn, name, canary=False, shadow=False)
            return withdrawn

    def rollback(self, name: str, reason: str = "") -> str:
        """Re-promote the production version that came before the current one."""
        with self._change(name) as (conn, current):
            if not current:
                raise RegistryError(f"model {name!r} has no production version to roll back from")
            stack = _production_stack(conn, name)
            if len(stack) < 2:
                raise RegistryError(f"{name}:{current} has no earlier production version to roll back to")
            target = stack[-2]
            _refuse_pruned(conn, name, target, "rolled back to")
            _set_stage(conn, name, current, "archived")
            _set_stage(conn, name, target, "production")
            _set_production(conn, name, target)
            _add_event(conn, name, "rollback", target, current, reason or "rollback")
            return target

    def prune(
        self, name: str, keep_newest: int, keep_rollbacks: int, dry_run: bool = False, keep: Collection[str] = ()
    ) -> list[str]:
        """Mark as pruned every version nothing needs any more, and return them (the caller deletes
        their artifacts, after this commit: a registry never points at an artifact already gone).
        `dry_run`: only say which (nothing changes, not even the revision endpoints poll).

        Kept: production, the canary, the shadow, staging versions, the last `keep_rollbacks`
        production versions (what `rollback` walks back through, production included), and the
        `keep_newest` most recently registered versions (candidates that may still be promoted), and
        the versions in `keep` (what the caller knows is still needed)."""
        if keep_rollbacks < 1 or keep_newest < 0:
            raise RegistryError(
                f"keep_rollbacks={keep_rollbacks}, keep_newest={keep_newest}: keep at least the production "
                "version (keep_rollbacks >= 1) and a non-negative number of the newest"
            )
        if dry_run:
            with self._errors(), self.engine.connect() as conn:
                return _prunable(conn, name, keep_newest, keep_rollbacks, keep)
        with self._change(name) as (conn, production):
            pruned = _prunable(conn, name, keep_newest, keep_rollbacks, keep)
            for version in pruned:
                _set_stage(conn, name, version, PRUNED)
                _add_event(
                    conn, name, "prune", version, production,
                    f"not among the {keep_newest} newest or the last {keep_rollbacks} production version(s)",
                    stage=PRUNED,
                )  # fmt: skip
            return pruned


# -- statements ---------------------------------------------------------------------------------
def _prunable(
    conn: sa.Connection, name: str, keep_newest: int, keep_rollbacks: int, keep: Collection[str] = ()
) -> list[str]:
    """The versions `prune` would mark, oldest first (see Registry.prune for what is kept)."""
    row = conn.execute(sa.select(models_table).where(models_table.c.name == name)).first()
    if row is None:
        return []
    rows = conn.execute(
        sa.select(versions_table.c.version, versions_table.c.stage)
        .where(versions_table.c.name == name)
        .order_by(versions_table.c.registered_at, versions_table.c.version)
    ).all()
    stack = _production_stack(conn, name)
    kept = {row.production, row.canary, row.shadow, *stack[-keep_rollbacks:], *keep}
    kept |= {r.version for r in rows if r.stage == "staging"}
    if keep_newest:
        kept |= {r.version for r in rows[-keep_newest:]}
    return [r.version for r in rows if r.stage != PRUNED and r.version not in kept]


def _production_stack(conn: sa.Connection, name: str) -> list[str]:
    """The production versions `rollback` walks back through, current last (from the history)."""
    events = conn.execute(sa.select(history_table).where(history_table.c.name == name).order_by(history_table.c.id))
    return production_stack([_event_dict(e) for e in events])


def _refuse_pruned(conn: sa.Connection, name: str, version: str, what: str) -> None:
    stage = conn.execute(
        sa.select(versions_table.c.stage).where(versions_table.c.name == name, versions_table.c.version == version)
    ).scalar_one_or_none()
    if stage == PRUNED:
        raise RegistryError(
            f"{name}:{version} was pruned (its artifact is deleted), so it cannot be {what}; "
            "package that model again, or choose a version `bertops models list` shows as kept"
        )


def _lock_model(conn: sa.Connection, name: str) -> str | None:
    """Create the model's row if needed and take its lock (the first statement of every change:
    on SQLite it takes the write lock, on PostgreSQL the row lock, until the commit)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialects: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}  # both upsert
    if conn.dialect.name not in dialects:
        raise RegistryError(f"registry databases are SQLite or PostgreSQL, not {conn.dialect.name}")
    statement = dialects[conn.dialect.name](models_table).values(name=name, revision=1)
    conn.execute(
        statement.on_conflict_do_update(index_elements=["name"], set_={"revision": models_table.c.revision + 1})
    )
    return conn.execute(sa.select(models_table.c.production).where(models_table.c.name == name)).scalar_one()


def _version(conn: sa.Connection, name: str, version: str) -> dict[str, Any]:
    record = conn.execute(
        sa.select(versions_table.c.record).where(versions_table.c.name == name, versions_table.c.version == version)
    ).scalar_one_or_none()
    if record is None:
        known = list(conn.execute(sa.select(versions_table.c.version).where(versions_table.c.name == name)).scalars())
        raise RegistryError(f"model {name!r} has no version {version!r}; known versions: {sorted(known)}")
    return record


def _set_stage(conn: sa.Connection, name: str, version: str, stage: str) -> None:
    conn.execute(
        versions_table.update()
        .where(versions_table.c.name == name, versions_table.c.version == version)
        .values(stage=stage)
    )


def _routing(conn: sa.Connection, name: str) -> Routing:
    row = conn.execute(sa.select(models_table).where(models_table.c.name == name)).one()
    return Routing(row.production, row.canary, row.canary_percent, row.shadow, row.revision)


def _set_trial(conn: sa.Connection, name: str, canary: bool, shadow: bool) -> None:
    """Keep (True) or clear (False) the canary and the shadow."""
    values: dict[str, Any] = {}
    if not canary:
        values.update(canary=None, canary_percent=None)
    if not shadow:
        values["shadow"] = None
    if values:
        conn.execute(models_table.update().where(models_table.c.name == name).values(**values))


def _set_production(conn: sa.Connection, name: str, version: str | None) -> None:
    conn.execute(models_table.update().where(models_table.c.name == name).values(production=version))


def _add_event(
    conn: sa.Connection,
    name: str,
    action: str,
    version: str,
    previous: str | None,
    reason: str,
    forced: bool = False,
    stage: str = "production",
    who: str | None = None,
    at: str | None = None,
) -> None:
    values = dict(
        action=action, version=version, stage=stage, previous=previous, reason=reason, forced=forced,
        who=who or _who(),
    )  # fmt: skip
    when = at or _now()
    conn.execute(history_table.insert().values(name=name, at=when, **values))
    conn.info.setdefault("bertops_events", []).append({**values, "when": when})  # announced after the commit


def _event_dict(row) -> dict[str, Any]:
    return {
        "action": row.action,
        "version": row.version,
        "stage": row.stage,
        "previous": row.previous,
        "reason": row.reason,
        "forced": bool(row.forced),
        "who": row.who,
        "when": row.at,
    }


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


# -- schema and the one-time import ---------------------------------------------------------------
def _alembic_config(connection: sa.Connection):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the latest schema revision (Alembic); a no-op when it is there."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.begin() as conn:
        head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
        current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
        if current == head:
            return
        if engine.dialect.name == "postgresql":  # two machines opening a fresh database at once
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242016)"))
        command.upgrade(_alembic_config(conn), "head")


def import_json(engine: sa.Engine, path: Path) -> bool:
    """Import an older bertops' registry.json (versions, stages, production, history), once per
    file content; the file itself is left where it is. Returns whether it imported."""
    import hashlib

    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    with engine.connect() as conn:
        if conn.execute(sa.select(imports_table.c.sha256).where(imports_table.c.sha256 == digest)).first():
            return False
    try:
        state = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc.msg}); restore it from a backup or move it away") from None
    with engine.begin() as conn:
        if conn.execute(sa.select(imports_table.c.sha256).where(imports_table.c.sha256 == digest)).first():
            return False  # another process imported it meanwhile
        for name, model in state.get("models", {}).items():
            _lock_model(conn, name)
            present = set(
                conn.execute(sa.select(versions_table.c.version).where(versions_table.c.name == name)).scalars()
            )
            if present:
                raise RegistryError(
                    f"{path} holds model {name!r}, which the registry database already has; "
                    "import it into an empty database or move the file away"
                )
            for version, record in model.get("versions", {}).items():
                body = {k: v for k, v in record.items() if k not in ("stage", "registered_at")}
                conn.execute(
                    versions_table.insert().values(
                        name=name,
                        version=version,
                        stage=record.get("stage", "candidate"),
                        registered_at=record.get("registered_at") or _now(),
                        record=body,
                    )
                )
            _set_production(conn, name, model.get("production"))
            for event in model.get("history", []):
                _add_event(
                    conn,
                    name,
                    event["action"],
                    event["version"],
                    event.get("previous"),
                    event.get("reason", ""),
                    forced=bool(event.get("forced")),
                    stage=event.get("stage", "production"),
                    who=event.get("who"),
                    at=event.get("when"),
                )
        conn.execute(imports_table.insert().values(sha256=digest, source=str(path.resolve()), at=_now()))
    return True


def _step(name: str) -> None:
    """A named point between two steps of a write (the crash tests stop a process at each one)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _who() -> str:
    try:
        return os.environ.get("BERTOPS_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
