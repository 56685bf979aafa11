"""Distillation of the smoke-trained teacher into a 3-layer student, then evaluate judging the student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import smoke_config

STUDENT_FLOOR = 0.62
pytestmark = pytest.mark.integration


def _workspace(source: Path, target: Path) -> Path:
    for rel in ("data/raw/sst2", "data/prepared/sst2", "reports/validate", "models/sst2"):
        shutil.copytree(source / rel, target / rel)
    return target


def test_student_from_every_other_teacher_layer(trained_workspace):
    from bertops.models.classifier import load_classifier
    from bertops.training.distill import build_student

    source, _, _ = trained_workspace
    teacher, _ = load_classifier(source / "models/sst2")
    student, mapping = build_student(teacher, 3, "every-other", None)
    assert mapping == [1, 3, 5] and student.config.num_hidden_layers == 3
    t, s = teacher.state_dict(), student.state_dict()
    for i, j in enumerate(mapping):
        key = "encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s["bert." + key.format(i)], t["bert." + key.format(j)])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    narrow, _ = build_student(teacher, 2, "first", 128)  # from scratch, narrower
    assert narrow.config.hidden_size == 128 and narrow.config.num_attention_heads == 2
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in student.parameters()) / 3


def test_distill_then_evaluate_the_student(trained_workspace, tmp_path: Path):
    from bertops.evaluation.evaluate import evaluate
    from bertops.training.distill import distill

    source, _, _ = trained_workspace
    root = _workspace(source, tmp_path)
    result = distill(smoke_config(), root)
    student = root / "models/sst2-student"
    assert Path(result.model_dir) == student and result.steps > 0
    lineage = json.loads((student / "lineage.json").read_text())
    teacher = json.loads((root / "models/sst2/lineage.json").read_text())
    assert lineage["stage"] == "distill" and lineage["teacher"]["model_sha256"] == teacher["model_sha256"]
    assert lineage["student"] == {"layers": 3, "from_teacher_layers": [1, 3, 5], "hidden_size": 384}
    assert teacher["model_sha256"] in lineage["parent_model"]
    assert (student / "model.safetensors").stat().st_size < 0.8 * (
        root / "models/sst2/model.safetensors"
    ).stat().st_size
    assert (root / "reports/distill/metrics.json").is_file()

    # evaluate judges the student when distill.enabled
    report = evaluate(smoke_config(["distill.enabled=true"]), root)
    assert report["model_dir"] == str(student) and report["model_sha256"] == lineage["model_sha256"]
    # One epoch on a few hundred rows already makes a student that classifies: 200 eval rows, a
    # student that learnt nothing from its teacher (or from shuffled labels) sits near 0.5 (SE 0.035).
    assert report["accuracy"] >= STUDENT_FLOOR, report["accuracy"]
    assert report["distilled_from"] == teacher["model_sha256"]  # the gate's speed trade reads this


def test_hidden_state_transfer_trains(trained_workspace, tmp_path: Path):
    from bertops.training.distill import distill

    source, _, _ = trained_workspace
    root = _workspace(source, tmp_path)
    result = distill(
        smoke_config(["distill.hidden_weight=1.0", "distill.max_steps=4", "distill.student_layers=2"]), root
    )
    assert result.steps == 4
    losses = [h["train_loss"] for h in result.history if "train_loss" in h]
    assert all(loss == loss and loss > 0 for loss in losses)  # finite, positive (KL + CE + MSE)


def test_bad_distillation_settings_are_clear_errors(trained_workspace, tmp_path: Path):
    from bertops.config import ConfigError
    from bertops.training.distill import distill

    source, _, _ = trained_workspace
    root = _workspace(source, tmp_path)
    with pytest.raises(ConfigError, match="exceeds the teacher's 6 layers"):
        distill(smoke_config(["distill.student_layers=8"]), root)
    with pytest.raises(ConfigError, match="needs the teacher's width"):
        smoke_config(["distill.hidden_weight=1.0", "distill.hidden_size=128"])
    (root / "models/sst2/model.safetensors").write_bytes(b"damaged")
    from bertops.lineage import ArtifactMismatch

    with pytest.raises(ArtifactMismatch, match="does not match the sha256"):
        distill(smoke_config(), root)
