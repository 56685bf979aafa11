"""`serve`: run the production model's Bento with `bentoml serve`, in the foreground or detached.

The endpoint follows the registry at start: it serves the Bento that the registry calls
production. After `promote`/`rollback`, `bertops serve --detach` restarts it on the new version.
"""

from __future__ import annotations

import os
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


def _command(config: Config, bento: str) -> list[str]:
    return [_bentoml(), "serve", bento, "--host", config.serve.host, "--port", str(config.serve.port)]


def pid_path(config: Config) -> Path:
    return config.paths.registry / "serve.pid"


def log_path(config: Config) -> Path:
    return config.paths.reports / "serve.log"


def describe(config: Config) -> str:
    from bertops.model_store import production_bento

    return production_bento(config)


def run_foreground(config: Config) -> None:
    from bertops.model_store import production_bento

    bento = production_bento(config)
    os.execv(_bentoml(), _command(config, bento))


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
    from bertops.model_store import production_bento

    bento = production_bento(config)
    stop(config)
    url = f"http://{config.serve.host}:{config.serve.port}"
    # From an empty folder: the Bento carries everything it serves (nothing is read from here).
    return _spawn_and_wait(
        _command(config, bento),
        url,
        "/readyz",
        timeout,
        pid_path(config),
        log_path(config),
        lambda: stop(config),
        cwd=tempfile.mkdtemp(prefix="bertops-serve-"),
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
    """Stop the detached process group whose leader's pid is in `path` (if its command line still
    contains `marker`: a recycled pid belongs to someone else)."""
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
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"server {pid} had already stopped"
    except PermissionError as exc:
        raise ServeError(f"cannot stop server {pid}: {exc}") from None
    for _ in range(40):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return f"stopped server {pid}"
        time.sleep(0.25)
    os.killpg(pid, signal.SIGKILL)
    return f"killed server {pid}"


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


def follow_registry(config: Config) -> str | None:
    """After promote/rollback: restart a running detached server on the new production Bento.

    Returns a line saying what now serves and how long the switch took; None if no server runs.
    """
    if not running(config):
        return None
    started = time.perf_counter()
    url = start_detached(config)
    return f"{url} now serves {describe(config)} (restart took {time.perf_counter() - started:.1f}s)"


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
