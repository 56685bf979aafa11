"""The real Prefect server (`bertops dashboard`), a scheduled deployment (`bertops schedule`) that
triggers runs by itself, and the Prefect UI in headless Chromium showing a run's artifacts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, datasets_root, scratch_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUT = REPO / "tests" / "out"
PORT = 4297
CHROMIUM = "/usr/bin/chromium"
ARTIFACT_KEYS = {
    "bertops-validation",
    "bertops-training-curves",
    "bertops-evaluation",
    "bertops-gate-decision",
    "bertops-promotion",
    "bertops-run-summary",
}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, request):
    """`bertops dashboard --detach` in a workspace: a Prefect server + UI on 127.0.0.1:PORT."""
    with scratch_dir(tmp_path_factory, request, "scheduled") as workspace:
        yield from _dashboard(workspace)


def _dashboard(workspace: Path):
    for item in ("params.yaml",):
        shutil.copy(REPO / item, workspace / item)
    for folder in ("configs", "data/behaviour"):
        shutil.copytree(REPO / folder, workspace / folder)
    env = {**os.environ, "PREFECT_HOME": str(workspace / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    bertops = str(Path(sys.executable).with_name("bertops"))
    args = ["-s", f"dashboard.port={PORT}"]
    started = subprocess.run(
        [bertops, "dashboard", "--detach", *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=240
    )
    assert started.returncode == 0, started.stderr
    assert f"export PREFECT_API_URL=http://127.0.0.1:{PORT}/api" in started.stdout
    try:
        yield workspace, env, f"http://127.0.0.1:{PORT}"
    finally:
        print(
            subprocess.run(
                [bertops, "dashboard", "--stop", *args], cwd=workspace, env=env, capture_output=True, text=True
            ).stdout
        )


def _descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pids: set[int]) -> set[int]:
    import psutil

    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _flow_runs(api: str, *states: str) -> list[dict]:
    """Runs of a deployment in the given state types (a schedule also creates many future runs)."""
    reply = httpx.post(
        f"{api}/flow_runs/filter",
        timeout=10,
        json={
            "flow_runs": {"state": {"type": {"any_": list(states)}}, "deployment_id": {"is_null_": False}},
            "limit": 20,
        },
    )
    reply.raise_for_status()
    return reply.json()


def test_a_scheduled_deployment_runs_by_itself_and_stops_cleanly(dashboard):
    workspace, env, url = dashboard
    api = f"{url}/api"
    bertops = str(Path(sys.executable).with_name("bertops"))
    log = workspace / "schedule.log"  # the schedule's own output: shown when something goes wrong

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:] if log.is_file() else "(no log)"

    with open(log, "wb") as sink:
        schedule = subprocess.Popen(
            [
                bertops,
                "schedule",
                "--interval",
                "30",
                "--name",
                "ci",
                "--on-drift",
                "--profile",
                "configs/smoke.yaml",
                "-s",
                f"ingest.search_paths=['{datasets_root() / 'sst2'}']",
                "-s",
                "serve.port=3931",
            ],
            cwd=workspace,
            env={**env, "PREFECT_API_URL": api},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seen: set[int] = set()
    completed = None
    problem = None
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and completed is None:
            assert schedule.poll() is None, f"bertops schedule exited:\n{tail()}"
            seen |= _descendants(schedule.pid)
            try:
                completed = next(iter(_flow_runs(api, "COMPLETED")), None)
                failed = _flow_runs(api, "FAILED", "CRASHED")
            except httpx.HTTPError:  # a busy 2-core machine: ask again
                time.sleep(2)
                continue
            assert not failed, f"{failed[0]['state']}\n{tail()}"
            time.sleep(2)
        assert completed is not None, f"no scheduled run completed within the wait:\n{tail()}"
        deployment = httpx.get(f"{api}/deployments/{completed['deployment_id']}", timeout=10).json()
        assert deployment["name"] == "ci" and deployment["parameters"]["profile"] == "configs/smoke.yaml"
        # a run due while another runs is cancelled, not queued (a drift event during a nightly run)
        assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        _drift_starts_a_run(api, env, completed["deployment_id"], tail)
    except BaseException as exc:
        problem = exc
        raise
    finally:
        seen |= _descendants(schedule.pid)
        os.killpg(schedule.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            schedule.wait(120)  # a run in progress finishes its stage first
        except subprocess.TimeoutExpired:
            os.killpg(schedule.pid, signal.SIGKILL)
            if problem is None:  # never hide the first failure behind this one
                pytest.fail(f"bertops schedule did not stop on Ctrl-C within 120 s:\n{tail()}")
    deadline = time.monotonic() + 30
    while _alive(seen | {schedule.pid}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(seen | {schedule.pid}), "processes left behind after stopping the schedule"
    (workspace / "completed_run_id").write_text(completed["id"])


def _drift_starts_a_run(api: str, env: dict, deployment_id: str, tail) -> None:
    """`bertops.drift.detected` (as `bertops monitor` sends it) makes the deployment's trigger
    start a run: one created by the automation, not by the schedule."""
    sent = subprocess.run(
        [sys.executable, "-c", "from bertops.events import drift_detected; "
         "print(drift_detected('bertops-sst2', 'bertops-sst2:v1', {'verdict': 'drift', 'drifted': ['tokens']}))"],
        env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.stdout.strip() == "True", sent.stderr[-2000:]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            reply = httpx.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "limit": 50},
                timeout=10,
            )
            reply.raise_for_status()
        except httpx.HTTPError:
            time.sleep(2)
            continue
        triggered = [r for r in reply.json() if (r.get("created_by") or {}).get("type") == "AUTOMATION"]
        if triggered:
            assert triggered[0]["parameters"]["profile"] == "configs/smoke.yaml"
            return
        time.sleep(2)
    pytest.fail(f"no run was started by the drift trigger within 120 s:\n{tail()}")


def test_the_prefect_ui_shows_the_runs_artifacts(dashboard):
    from playwright.sync_api import sync_playwright

    workspace, _, url = dashboard
    assert Path(CHROMIUM).is_file(), "Chromium is missing: `make install` installs Debian's chromium"
    run_id = (workspace / "completed_run_id").read_text()
    artifacts = httpx.post(
        f"{url}/api/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}, timeout=10
    ).json()
    assert ARTIFACT_KEYS <= {a["key"] for a in artifacts}

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/runs/flow-run/{run_id}", wait_until="networkidle", timeout=90_000)
            page.get_by_text("Artifacts", exact=True).first.click()  # the run page's Artifacts tab
            for key in ("bertops-gate-decision", "bertops-evaluation", "bertops-training-curves"):
                page.get_by_text(key).first.wait_for(timeout=30_000)
            page.screenshot(path=str(OUT / "prefect-flow-run-artifacts.png"), full_page=True)
            page.get_by_text("bertops-gate-decision").first.click()
            page.get_by_text("Gate: APPROVED").first.wait_for(timeout=30_000)
            page.screenshot(path=str(OUT / "prefect-gate-decision.png"), full_page=True)
        finally:
            browser.close()
    assert (OUT / "prefect-flow-run-artifacts.png").stat().st_size > 10_000


def test_the_drift_watch_runs_as_a_deployment_on_its_interval(dashboard):
    """`bertops monitor --serve`: the drift-watch flow served as a Prefect deployment every
    monitor.interval_s, with its parameters; Ctrl-C stops it."""
    workspace, env, url = dashboard
    api = f"{url}/api"
    bertops = str(Path(sys.executable).with_name("bertops"))
    log = workspace / "drift-watch.log"
    with open(log, "wb") as sink:
        watch = subprocess.Popen(
            [bertops, "monitor", "--serve", "--profile", "configs/smoke.yaml", "-s", "monitor.interval_s=3600",
             "--url", "http://127.0.0.1:3939"],
            cwd=workspace, env={**env, "PREFECT_API_URL": api}, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline, found = time.monotonic() + 120, None
        while time.monotonic() < deadline and found is None:
            assert watch.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                reply = httpx.post(
                    f"{api}/deployments/filter", json={"deployments": {"name": {"any_": ["drift-watch"]}}}, timeout=10
                )
                found = next(iter(reply.json()), None) if reply.status_code == 200 else None
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert found is not None, log.read_text(errors="replace")[-3000:]
        assert found["parameters"]["url"] == "http://127.0.0.1:3939"
        assert found["parameters"]["profile"] == "configs/smoke.yaml"
        assert [s["schedule"]["interval"] for s in found["schedules"]] == [3600.0]
    finally:
        os.killpg(watch.pid, signal.SIGINT)
        try:
            watch.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(watch.pid, signal.SIGKILL)
            pytest.fail("bertops monitor --serve did not stop on Ctrl-C within 60 s")
