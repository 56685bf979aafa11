import json
from pathlib import Path

import pytest

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
    _write(tmp_path / "models/sst2/lineage.json", {"model_sha256": "bbb"})
    with pytest.raises(GateRejected, match="other weights"):
        package(smoke_config(), tmp_path)
    assert not (tmp_path / "registry").exists()
