"""The Prefect flow under prefect_test_harness (a real, temporary Prefect API)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, datasets_root, registry_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def workspace(tmp_path: Path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "data" / "behaviour", tmp_path / "data" / "behaviour")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def _run(overrides: list[str], **kwargs):
    from bertops_flows.pipeline import retrain

    return retrain(
        params="params.yaml",
        profile="configs/smoke.yaml",
        overrides=[f"ingest.search_paths=['{datasets_root() / 'sst2'}']"] + overrides,
        **kwargs,
    )


@pytest.fixture()
def webhook():
    """A local HTTP receiver on 127.0.0.1 collecting the JSON events it is sent."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    events: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", events
    server.shutdown()


def test_flow_runs_every_stage_and_publishes_a_summary(harness, workspace: Path, webhook):
    from prefect.client.orchestration import get_client

    hook_url, events = webhook
    summary = _run([f"notify.webhook_url={hook_url}"])
    assert summary["ok"] and summary["executor"] == "direct"
    assert [t[0] for t in summary["timings"]] == [
        "ingest",
        "validate",
        "pretrain",
        "prepare",
        "finetune",
        "distill",
        "evaluate",
        "gate",
        "package",
        "promote",
    ]
    registry = registry_state(workspace)
    assert registry["production"] is not None

    async def artifact(key: str) -> str:
        async with get_client() as client:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return found[0].data

    import asyncio

    markdown = asyncio.run(artifact("bertops-run-summary"))
    assert "# bertops run: sst2" in markdown and "gate: approved" in markdown and registry["production"] in markdown
    gate_md = asyncio.run(artifact("bertops-gate-decision"))
    assert gate_md.startswith("## Gate: APPROVED") and "| p95 latency ms |" in gate_md
    assert "### Behavioural checks" in asyncio.run(artifact("bertops-evaluation"))
    validation_md = asyncio.run(artifact("bertops-validation"))
    assert "Data validation: PASSED" in validation_md and "data_docs/local_site/index.html" in validation_md
    curves = asyncio.run(artifact("bertops-training-curves"))
    assert "validation accuracy" in curves and any(c in curves for c in "▁▂▃▄▅▆▇█")
    assert registry["production"] in asyncio.run(artifact("bertops-promotion"))
    history = asyncio.run(artifact("bertops-registry-history"))
    assert registry["production"] in json.dumps(history) and "promote" in json.dumps(history)
    # Every registry change is also a Prefect event about the model (the event feed, automations).
    _wait_for_event("bertops.model.promote", registry["production"])
    assert asyncio.run(artifact("bertops-endpoint")).endswith("(http://127.0.0.1:3917)")
    # One promotion event reached the webhook, naming the version.
    assert [e["event"] for e in events] == ["promotion"] and events[0]["version"] == registry["production"]

    # A bad corpus stops the flow at validate; nothing downstream changes.
    model_bytes = (workspace / "models/sst2/model.safetensors").read_bytes()
    bad = workspace / "bad"
    bad.mkdir()
    lines = (datasets_root() / "sst2/dev.tsv").read_text().splitlines()[:200]
    relabelled = [line.rsplit("\t", 1)[0] + "\tmaybe" for line in lines[1:]]
    (bad / "train.tsv").write_text("\n".join([lines[0], *relabelled]) + "\n")
    from bertops.errors import PipelineError

    with pytest.raises(PipelineError, match=r"(?s)validate.*labels inside the declared label set"):
        _run([f"ingest.path={bad}", f"notify.webhook_url={hook_url}"])
    assert events[-1]["event"] == "failure" and events[-1]["stage"] == "validate"
    assert "labels inside the declared label set" in events[-1]["message"]
    after = registry_state(workspace)
    assert after["production"] == registry["production"] and after["versions"].keys() == registry["versions"].keys()
    assert (workspace / "models/sst2/model.safetensors").read_bytes() == model_bytes

    # distill.enabled chains finetune -> distill, and evaluate/gate/package/promote ship the student.
    # (the policy itself is the gate's unit tests' business: here any student may pass; the smoke
    # profile serves /embed from the model's own encoder, whose retrieval a 2-layer student loses,
    # which the embedding checks would refuse: turned off here too)
    summary = _run(
        [
            "distill.enabled=true",
            "distill.student_layers=2",
            "gate.non_inferiority_margin=1.0",
            "gate.speed_trade=null",
            "gate.slice_non_inferiority_margin=1.0",
            "gate.embedding_margin=null",
        ]
    )
    outcomes = {stage: outcome for stage, _, outcome in summary["timings"]}
    assert outcomes["pretrain"] == "disabled" and outcomes["distill"] == "ran"
    shipped = registry_state(workspace)
    lineage = shipped["versions"][shipped["production"]]["lineage"]
    assert shipped["production"] != registry["production"] and lineage["stage"] == "distill"
    assert lineage["student"]["layers"] == 2 and lineage["teacher"]["layers"] == 6


def _wait_for_event(name: str, version: str, timeout: float = 30) -> None:
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=EventFilter(event=EventNameFilter(name=[name])), limit=50)
        if any(e.payload.get("version") == version for e in page.events):
            return
        assert time.monotonic() < deadline, f"no {name} event for {version}"
        time.sleep(1)


def test_a_second_run_while_one_holds_the_workspace_is_skipped(harness, workspace: Path):
    from bertops.atomic import workspace_lock

    with workspace_lock(workspace) as busy:
        assert busy is None
        state = _run([], return_state=True)
    assert state.is_cancelled() and state.name == "Skipped" and "workspace lock" in state.message
    assert not (workspace / "models").exists()  # the skipped run touched nothing
