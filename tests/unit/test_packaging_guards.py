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


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda folder: (folder / "config.json").write_text('{"num_labels": 3}'), "config.json"),
        (
            lambda folder: (folder / "modeling_bertops.py").write_text("import os  # runs with trust_remote_code"),
            "modeling_bertops.py",
        ),
        (lambda folder: (folder / "vocab.txt").unlink(), "vocab.txt"),
        (lambda folder: (folder / "extra.py").write_text("print('new code')"), "extra.py"),
    ],
)
def test_every_file_that_loading_reads_is_fingerprinted(tmp_path: Path, change, named: str):
    """Not only the weights: config, the model's own code and the tokenizer change what a model does."""
    from bertops.lineage import folder_fingerprint
    from bertops.models.classifier import verify_weights

    folder = tmp_path / "models/sst2"
    for name, text in (
        ("model.safetensors", "weights"),
        ("config.json", '{"num_labels": 2}'),
        ("modeling_bertops.py", "# the head"),
        ("vocab.txt", "[PAD]\n[UNK]"),
    ):
        _write(folder / name, text)
    lineage = {"model_sha256": file_sha256(folder / "model.safetensors"), "files_sha256": folder_fingerprint(folder)}
    _write(folder / "lineage.json", lineage)
    assert verify_weights(folder)["files_sha256"] == lineage["files_sha256"]  # untouched: trusted
    change(folder)
    with pytest.raises(ArtifactMismatch, match=named):
        verify_weights(folder)


def test_only_the_runtime_and_the_bytes_the_gate_judged_are_shipped(tmp_path: Path):
    from bertops.packaging import check_judged_runtime

    judged = tmp_path / "onnx/model-int8.onnx"
    _write(judged, "int8 graph")
    export = {"runtime": "onnx-int8", "runtimes": {"onnx-int8": {"file": "onnx/model-int8.onnx", "passed": True}}}
    decision = {"approved": True, "runtime": "onnx-int8", "runtime_sha256": file_sha256(judged)}
    check_judged_runtime(export, decision, tmp_path)  # the same runtime, the same bytes: shipped
    with pytest.raises(GateRejected, match="judged runtime 'onnx'"):
        check_judged_runtime(export, {**decision, "runtime": "onnx"}, tmp_path)
    judged.write_text("re-exported since")  # other bytes than the gate saw
    with pytest.raises(GateRejected, match="not the file the gate judged"):
        check_judged_runtime(export, decision, tmp_path)


def test_an_embedding_model_whose_vocabulary_or_dimension_does_not_match_is_refused():
    from bertops.models.export import ExportCheckFailed, check_embedding_model

    check_embedding_model("enc", tokens=30522, vocabulary=30522, hidden=384, produced=384)  # matches: no error
    with pytest.raises(ExportCheckFailed, match="30600 tokens but its encoder's vocabulary holds 30522"):
        check_embedding_model("enc", tokens=30600, vocabulary=30522, hidden=384, produced=None)
    with pytest.raises(ExportCheckFailed, match="declares 384-dimensional vectors .* produces 768"):
        check_embedding_model("enc", tokens=30522, vocabulary=30522, hidden=384, produced=768)
