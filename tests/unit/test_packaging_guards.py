import json
from pathlib import Path

import pytest

from bertops.lineage import ArtifactMismatch, file_sha256
from bertops.packaging import GateRejected, package
from tests.conftest import smoke_config


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def test_no_decision_means_no_package(tmp_path: Path):
    with pytest.raises(GateRejected, match="run `bertops gate` first"):
        package(smoke_config(), tmp_path)


def test_a_rejection_is_never_packaged(tmp_path: Path):
    _write(tmp_path / "reports/gate/decision.json", {"approved": False, "reasons": ["accuracy = 0.5, needs >= 0.9"]})
    with pytest.raises(GateRejected, match="accuracy = 0.5"):
        package(smoke_config(), tmp_path)


def test_an_approval_for_other_weights_is_not_reused(tmp_path: Path):
    _write(tmp_path / "reports/gate/decision.json", {"approved": True, "reasons": [], "model_sha256": "aaa"})
    weights = tmp_path / "models/sst2/model.safetensors"
    _write(weights, "weights")
    _write(tmp_path / "models/sst2/lineage.json", {"model_sha256": file_sha256(weights)})
    with pytest.raises(GateRejected, match="other weights"):
        package(smoke_config(), tmp_path)
    assert not (tmp_path / "registry").exists()


def test_weights_changed_since_training_are_never_packaged(tmp_path: Path):
    weights = tmp_path / "models/sst2/model.safetensors"
    _write(weights, "weights")
    _write(tmp_path / "models/sst2/lineage.json", {"model_sha256": file_sha256(weights)})
    _write(
        tmp_path / "reports/gate/decision.json", {"approved": True, "reasons": [], "model_sha256": file_sha256(weights)}
    )
    weights.write_text("tampered")
    with pytest.raises(ArtifactMismatch, match="does not match the sha256"):
        package(smoke_config(), tmp_path)
    assert not (tmp_path / "registry").exists()
