"""The Prefect flow under prefect_test_harness (a real, temporary Prefect API)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, datasets_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def workspace(tmp_path: Path):
    shutil.copytree(REPO / "serving", tmp_path / "serving")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "data" / "behaviour", tmp_path / "data" / "behaviour")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def _run(overrides: list[str]):
    from flows.pipeline import pipeline

    return pipeline(params="params.yaml", profile="configs/smoke.yaml",
                    overrides=[f"ingest.search_paths=['{datasets_root() / 'sst2'}']"] + overrides)


def test_flow_runs_every_stage_and_publishes_a_summary(harness, workspace: Path):
    from prefect.client.orchestration import get_client

    summary = _run([])
    assert summary["ok"] and summary["executor"] == "direct"
    assert [t[0] for t in summary["timings"]] == ["ingest", "validate", "prepare", "finetune", "evaluate", "gate",
                                                  "package", "promote"]
    registry = json.loads((workspace / "registry/registry.json").read_text())["models"]["bertops-sst2"]
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

    # A bad corpus stops the flow at validate; nothing downstream changes.
    model_bytes = (workspace / "models/sst2/model.safetensors").read_bytes()
    bad = workspace / "bad"
    bad.mkdir()
    lines = (datasets_root() / "sst2/dev.tsv").read_text().splitlines()[:200]
    (bad / "train.tsv").write_text("\n".join([lines[0]] + [l.rsplit("\t", 1)[0] + "\tmaybe" for l in lines[1:]]) + "\n")
    from bertops.errors import PipelineError

    with pytest.raises(PipelineError, match=r"(?s)validate.*labels inside the declared label set"):
        _run([f"ingest.path={bad}"])
    after = json.loads((workspace / "registry/registry.json").read_text())["models"]["bertops-sst2"]
    assert after["production"] == registry["production"] and after["versions"].keys() == registry["versions"].keys()
    assert (workspace / "models/sst2/model.safetensors").read_bytes() == model_bytes
