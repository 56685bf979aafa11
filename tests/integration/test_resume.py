"""A fine-tune killed mid-run resumes from its checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, smoke_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OVERRIDES = ["finetune.checkpoint_every=10", "finetune.epochs=2"]


def _workspace(source: Path, target: Path) -> Path:
    for rel in ("data/raw/sst2", "data/prepared/sst2", "reports/validate"):
        shutil.copytree(source / rel, target / rel)
    return target


def test_a_killed_finetune_resumes_from_its_checkpoint(trained_workspace, tmp_path: Path):
    from safetensors.numpy import load_file

    from bertops.training.finetune import finetune

    source, _, _ = trained_workspace
    killed = _workspace(source, tmp_path / "killed")
    state = killed / "models/.checkpoints/sst2/state.pt"
    script = (
        "import sys; from pathlib import Path; from tests.conftest import smoke_config; "
        "from bertops.training.finetune import finetune; "
        f"finetune(smoke_config({OVERRIDES!r}), Path({str(killed)!r}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not state.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.is_file(), "the run ended before writing a checkpoint"
    assert not (killed / "models/sst2").exists()  # killed before it saved a model

    resumed = finetune(smoke_config(OVERRIDES), killed)
    assert resumed.resumed_from_step >= 10
    assert not state.exists()  # cleared once the model is saved

    reference = finetune(smoke_config(OVERRIDES), _workspace(source, tmp_path / "whole"))
    assert reference.resumed_from_step == 0 and reference.steps == resumed.steps > resumed.resumed_from_step
    assert reference.best_step == resumed.best_step
    a = load_file(killed / "models/sst2/model.safetensors")
    b = load_file(tmp_path / "whole/models/sst2/model.safetensors")
    assert max(float(abs(a[k] - b[k]).max()) for k in a) < 1e-4


def test_a_checkpoint_from_other_params_is_ignored(trained_workspace, tmp_path: Path):
    from bertops.training.checkpoint import Checkpoint
    from bertops.training.finetune import finetune

    source, _, _ = trained_workspace
    root = _workspace(source, tmp_path / "ws")
    import json

    meta = json.loads((root / "data/prepared/sst2/meta.json").read_text())
    stale = Checkpoint(
        root / "models/.checkpoints/sst2",
        Checkpoint.key(smoke_config(["finetune.lr=0.5"]).finetune, meta.get("prepared_hash"), 1),
    )
    stale.save({"step": 999})
    result = finetune(smoke_config(OVERRIDES + ["finetune.max_steps=12"]), root)
    assert result.resumed_from_step == 0 and result.steps == 12
