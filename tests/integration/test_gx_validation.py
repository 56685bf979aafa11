"""Great Expectations for real, on good and bad corpora built from SST-2 rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bertops.data.ingest import ingest
from bertops.data.validation import ValidationFailed, validate
from tests.conftest import REPO, smoke_config

pytestmark = pytest.mark.integration


def _corpus(folder: Path, sst2: Path, train_rows: int = 300, eval_rows: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train = (sst2 / "train.tsv").read_text().splitlines()[: train_rows + 1]
    dev = (sst2 / "dev.tsv").read_text().splitlines()[: eval_rows + 1]
    (folder / "train.tsv").write_text("\n".join(train) + "\n")
    (folder / "dev.tsv").write_text("\n".join(dev) + "\n")
    return folder


def _validate(folder: Path, root: Path):
    cfg = smoke_config([f"ingest.path={folder}"])
    ingest(cfg, root)
    return validate(cfg, root)


def _failure(folder: Path, root: Path) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as err:
        _validate(folder, root)
    return err.value


def test_real_sst2_passes_and_writes_report_and_data_docs(tmp_path: Path, sst2: Path):
    report = _validate(sst2, tmp_path)
    assert report.success and report.rows == {"train": 67349, "eval": 872}
    assert (tmp_path / "reports/validate/report.json").is_file()
    assert Path(report.data_docs).is_file() and Path(report.data_docs).name == "index.html"


def test_missing_label_column(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    for name in ("train.tsv", "dev.tsv"):
        lines = (corpus / name).read_text().splitlines()
        (corpus / name).write_text("\n".join(line.split("\t")[0] for line in lines) + "\n")
    failure = _failure(corpus, tmp_path)
    assert "label column 'label' present" in str(failure)
    assert (tmp_path / "reports/validate/report.json").is_file()  # the report is written on failure too


def test_empty_texts_are_named_with_their_rows(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    lines = (corpus / "train.tsv").read_text().splitlines()
    lines[5] = "\t1"
    lines[9] = "   \t0"
    (corpus / "train.tsv").write_text("\n".join(lines) + "\n")
    failure = _failure(corpus, tmp_path)
    failed = {c.name: c for c in failure.report.failures}
    assert "text length within bounds" in failed and failed["text length within bounds"].examples[0]["row"] == 5
    assert "text is not blank" in failed and failed["text is not blank"].unexpected_count == 2


def test_unknown_labels_show_the_offending_values(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    lines = (corpus / "dev.tsv").read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tpositive"
    (corpus / "dev.tsv").write_text("\n".join(lines) + "\n")
    failure = _failure(corpus, tmp_path)
    [check] = [c for c in failure.report.failures if c.name == "labels inside the declared label set"]
    assert check.table == "eval" and check.examples[0]["label"] == "positive"


def test_non_utf8_file(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    lines = (corpus / "train.tsv").read_bytes().split(b"\n")
    for i in (2, 4, 6):  # a latin-1 "é" is not valid UTF-8
        lines[i] = lines[i].replace(b"\t", b" caf\xe9\t", 1)
    (corpus / "train.tsv").write_bytes(b"\n".join(lines))
    failure = _failure(corpus, tmp_path)
    [check] = [c for c in failure.report.failures if c.name == "text is valid UTF-8"]
    assert check.unexpected_count == 3 and "\ufffd" in check.examples[0]["sentence"]


def test_empty_file(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    (corpus / "train.tsv").write_bytes(b"")
    failure = _failure(corpus, tmp_path)
    names = {c.name for c in failure.report.failures if c.table == "train"}
    assert {"at least min_rows rows", "text column 'sentence' present"} <= names


def test_train_eval_overlap_is_leakage(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    train_lines = (corpus / "train.tsv").read_text().splitlines()
    dev_lines = (corpus / "dev.tsv").read_text().splitlines()
    (corpus / "dev.tsv").write_text("\n".join(dev_lines + train_lines[1:4]) + "\n")
    failure = _failure(corpus, tmp_path)
    [check] = [c for c in failure.report.failures if "leakage" in c.name]
    assert check.unexpected_count == 3


def test_class_imbalance_and_duplicates(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    lines = (corpus / "train.tsv").read_text().splitlines()
    positives = [line for line in lines[1:] if line.endswith("\t1")]
    (corpus / "train.tsv").write_text("\n".join([lines[0]] + positives * 3) + "\n")
    failed = {c.name for c in _failure(corpus, tmp_path).report.failures}
    assert {"class balance within bounds", "duplicate rate under max_duplicate_rate"} <= failed


def test_cli_exits_non_zero_naming_the_expectation(tmp_path: Path, sst2: Path):
    corpus = _corpus(tmp_path / "c", sst2)
    lines = (corpus / "train.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t7"
    (corpus / "train.tsv").write_text("\n".join(lines) + "\n")
    args = [
        "--profile",
        str(REPO / "configs/smoke.yaml"),
        "--params",
        str(REPO / "params.yaml"),
        "-s",
        f"ingest.path={corpus}",
    ]
    cli = [sys.executable, "-m", "bertops.cli"]
    assert subprocess.run(cli + ["ingest", *args], cwd=tmp_path, capture_output=True).returncode == 0
    proc = subprocess.run(cli + ["validate", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "labels inside the declared label set" in proc.stderr and '"label": "7"' in proc.stderr
    assert "Traceback" not in proc.stderr
