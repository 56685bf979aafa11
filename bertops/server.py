"""`serve`: run the production endpoint, in the foreground or detached. It follows the registry.

`bertops serve` resolves the registry's production version, fetches it from the model store
(sha256 checked), lays out a working folder with the service code (serving/service.py and
engine.py, installed with bertops as `bertops_serving`; the encoding and the task's pure core) and
starts `bentoml serve` there. From then on the endpoint follows the registry by itself
(bertops.follow): a promotion or rollback reaches it within `serve.poll_s` seconds with no
restart, and `promote`/`rollback` ask it to look at once (POST /admin/reload, with the admin token
this module hands a detached server).

Needs nothing from the workspace but the two URLs (BERTOPS_REGISTRY_URL, BERTOPS_STORE_URL or the
`registry` settings): an endpoint on another machine starts from an empty folder, with bertops
installed from its wheel (no checkout).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bertops.config import Config
from bertops.errors import BertopsError


class ServeError(BertopsError, RuntimeError):
    """The endpoint could not be started or stopped; the message says why."""


def _bentoml() -> str:
    return str(Path(sys.executable).with_name("bentoml"))


def pid_path(config: Config) -> Path:
    return config.paths.registry / "serve.pid"


def token_path(config: Config) -> Path:
    return config.paths.registry / "serve.admin-token"


def admin_token(config: Config) -> str:
    """The admin token of this workspace's endpoint: the environment's, else the one
    `start_detached` wrote; "" when there is none."""
    path = token_path(config)
    return os.environ.get(config.serve.admin_token_env or "") or (path.read_text().strip() if path.is_file() else "")


def log_path(config: Config) -> Path:
    return config.paths.reports / "serve.log"


def describe(config: Config) -> str:
    """name:version of the registry's production model."""
    from bertops.model_store import registry_for
    from bertops.registry import RegistryError

    name = config.package.model_name
    version = registry_for(config).production(name)
    if version is None:
        raise RegistryError(f"model {name!r} has no production version; run the pipeline or `bertops promote VERSION`")
    return f"{name}:{version}"


def prepare(config: Config, root: Path = Path(".")) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command and environment of an endpoint that follows the registry."""
    from bertops.model_store import fetch_version, registry_for, store_for
    from bertops.packaging import SETTINGS_FILE, lay_out_service
    from bertops.registry import RegistryError
    from bertops.tasks import get_task

    registry, store = registry_for(config, root), store_for(config, root)
    name = config.package.model_name
    version = registry.production(name)
    if version is None:
        raise RegistryError(f"model {name!r} has no production version; run the pipeline or `bertops promote VERSION`")
    path = fetch_version(config, version, root, registry).resolve()
    if not (path / SETTINGS_FILE).is_file():
        raise ServeError(f"{name}:{version} was packaged by an older bertops (no {SETTINGS_FILE}); re-package it")
    model_settings = json.loads((path / SETTINGS_FILE).read_text())
    task = get_task(model_settings["task"])
    settings = {
        **model_settings,
        "serve": config.serve.model_dump(),  # this endpoint's limits; the model brings its task settings
        "follow": {"model": name, "version": version, "model_path": str(path)},
    }
    workdir = Path(tempfile.mkdtemp(prefix="bertops-serve-"))
    lay_out_service(task, settings, workdir)
    env = {
        **os.environ,
        "BERTOPS_REGISTRY_URL": registry.url,
        "BERTOPS_STORE_URL": store.url,
        "BERTOPS_CACHE": str(store.cache.resolve()),
    }
    command = [_bentoml(), "serve", task.service, "--working-dir", str(workdir)]
    return command + ["--host", config.serve.host, "--port", str(config.serve.port)], env


def run_foreground(config: Config) -> None:
    command, env = prepare(config)
    os.execve(command[0], command, env)


def wait_ready(url: str, timeout: float, process: subprocess.Popen | None = None, probe: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}{probe}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServeError(f"the server at {url} was not ready after {timeout:.0f}s")


def start_detached(config: Config, timeout: float = 180) -> str:
    """Start (or restart) the server in the background; returns its URL once /readyz answers."""
    command, env = prepare(config)
    stop(config)
    url = f"http://{config.serve.host}:{config.serve.port}"
    admin_env = config.serve.admin_token_env
    if admin_env and not env.get(admin_env):  # a token for this server only, so promote can reach it
        env[admin_env] = secrets.token_urlsafe(24)
        path = token_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(env[admin_env])
    return _spawn_and_wait(
        command,
        url,
        "/readyz",
        timeout,
        pid_path(config),
        log_path(config),
        lambda: stop(config),
        env=env,
        cwd=tempfile.mkdtemp(prefix="bertops-serve-"),  # nothing is read from the workspace
    )


def _spawn_and_wait(
    command: list[str], url: str, probe: str, timeout: float, pid_file: Path, log: Path, on_failure, **popen
) -> str:
    """Start `command` in its own session (output to `log`, pid to `pid_file`) and return `url`
    once `probe` answers 200; on failure stop it and say where the log is."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **popen
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(process.pid))
    try:
        wait_ready(url, timeout, process, probe)
    except ServeError as exc:
        on_failure()
        raise ServeError(f"{exc}; see {log}") from None
    return url


def stop(config: Config) -> str:
    """Stop a detached server (its whole process group)."""
    return stop_process(pid_path(config), "bentoml")


def stop_process(path: Path, marker: str) -> str:
    """Stop the detached server whose leader's pid is in `path` (if its command line still
    contains `marker`: a recycled pid belongs to someone else), with every process under it:
    BentoML starts its workers in sessions of their own, so the leader's process group alone
    would leave them serving (and holding the port) as orphans."""
    if not path.is_file():
        return "no detached server running"
    pid = int(path.read_text())
    path.unlink()
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"server {pid} had already stopped"
    if marker not in cmdline:  # the pid was reused by an unrelated process: leave it alone
        return f"server {pid} had already stopped"
    tree = [pid, *descendants(pid)]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"server {pid} had already stopped"
    except PermissionError as exc:
        raise ServeError(f"cannot stop server {pid}: {exc}") from None
    for _ in range(60):
        if not any(_alive(p) for p in tree):
            return f"stopped server {pid}"
        time.sleep(0.25)
    kill_tree(tree)
    return f"killed server {pid}"


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, theirs, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pids: list[int]) -> None:
    """SIGKILL each process (and its group: what it started) at once: no cleanup runs."""
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited: only its parent has not read its status yet


def running(config: Config) -> bool:
    """Whether a server started with --detach is alive."""
    path = pid_path(config)
    if not path.is_file():
        return False
    try:
        cmdline = Path(f"/proc/{int(path.read_text())}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"bentoml" in cmdline


def follow_registry(config: Config, timeout: float = 120) -> str | None:
    """After promote/rollback: ask a running detached server to switch now (it would within
    serve.poll_s anyway). Returns what it serves and how long the switch took; None if none runs."""
    if not running(config):
        return None
    token = admin_token(config)
    url = f"http://{config.serve.host}:{config.serve.port}"
    started = time.perf_counter()
    try:
        response = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServeError(
            f"the endpoint at {url} did not answer the reload ({exc}); it follows the registry by itself"
        ) from None
    status = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        raise ServeError(
            f"the endpoint at {url} did not switch: {status.get('error') or response.text[:300]}; "
            "it keeps serving its current version"
        )
    return (
        f"{url} now serves {config.package.model_name}:{status.get('serving')} "
        f"(switched in {time.perf_counter() - started:.1f}s, no restart)"
    )


# -- the Prefect dashboard ---------------------------------------------------------------------
def dashboard_url(config: Config) -> str:
    return f"http://{config.dashboard.host}:{config.dashboard.port}"


def dashboard_command(config: Config) -> list[str]:
    prefect = str(Path(sys.executable).with_name("prefect"))
    return [prefect, "server", "start", "--host", config.dashboard.host, "--port", str(config.dashboard.port)]


def dashboard_env(config: Config) -> dict[str, str]:
    """The UI must call the API where this server listens (by default it assumes port 4200)."""
    url = dashboard_url(config)
    return {
        **os.environ,
        "PREFECT_UI_API_URL": f"{url}/api",
        "PREFECT_SERVER_API_HOST": config.dashboard.host,
        "PREFECT_SERVER_API_PORT": str(config.dashboard.port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_dashboard(config: Config, timeout: float = 120) -> str:
    """Start a local Prefect server + UI in the background; returns its URL once its API answers."""
    pid_file = config.paths.registry / "dashboard.pid"
    stop_process(pid_file, "prefect")
    return _spawn_and_wait(
        dashboard_command(config),
        dashboard_url(config),
        "/api/health",
        timeout,
        pid_file,
        config.paths.reports / "dashboard.log",
        lambda: stop_process(pid_file, "prefect"),
        env=dashboard_env(config),
    )


def stop_dashboard(config: Config) -> str:
    return stop_process(config.paths.registry / "dashboard.pid", "prefect")
