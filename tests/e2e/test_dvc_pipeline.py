"""End to end through the build system: `dvc repro` in a fresh git+DVC repo on the smoke profile,
then a second run that must skip every stage, then the Prefect flow on the DVC executor."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, smoke_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sh(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("dvcrepo")
    for item in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / item, root / item)
    for folder in ("serving", "bertops", "data/behaviour"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "bertops_serving.json"))
    (root / "params.yaml").write_text(yaml.safe_dump(smoke_config().to_dict(), sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    git = ["git", "-c", "user.name=bertops-test", "-c", "user.email=test@localhost"]
    _sh(["git", "init", "-q"], root, env)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root, env)
    _sh([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(root.parent / "dvcstore")], root, env)
    _sh(git + ["add", "-A"], root, env)
    _sh(git + ["commit", "-qm", "init"], root, env)
    return root, env


def test_dvc_repro_runs_all_stages_then_caches_them(repo):
    root, env = repo
    first = _sh([sys.executable, "-m", "dvc", "repro"], root, env)
    for stage in ("ingest", "validate", "prepare", "finetune", "evaluate", "gate", "package", "promote"):
        assert f"Running stage '{stage}'" in first.stdout
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"ingest", "validate", "prepare", "finetune", "evaluate", "gate", "package", "promote"}
    metrics = json.loads(_sh([sys.executable, "-m", "dvc", "metrics", "show", "--json"], root, env).stdout)
    flat = json.dumps(metrics)
    assert '"accuracy"' in flat and '"best_validation_accuracy"' in flat and '"truncated_share"' in flat

    # The model records the DVC hash of the corpus it was trained on.
    lineage = json.loads((root / "models/sst2/lineage.json").read_text())
    assert lineage["git_commit"] != "unknown"
    assert lineage["dvc_md5"] == lock["ingest"]["outs"][0]["md5"]

    second = _sh([sys.executable, "-m", "dvc", "repro"], root, env)
    assert "Running stage 'finetune'" not in second.stdout and "Running stage 'package'" not in second.stdout

    _sh([sys.executable, "-m", "dvc", "push", "-q"], root, env)
    assert any((root.parent / "dvcstore").rglob("*"))


def test_flow_on_the_dvc_executor_skips_unchanged_stages(repo):
    root, env = repo
    bertops = str(Path(sys.executable).with_name("bertops"))
    proc = _sh([bertops, "run"], root, env)
    assert "| finetune |" in proc.stdout and "cached" in proc.stdout.split("| finetune |")[1].splitlines()[0]
