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
    failure = _failure(corpus, tmp_path)
    failed = {c.name: c for c in failure.report.failures}
    assert "class balance within bounds" in failed
    [duplicates] = [c for name, c in failed.items() if name.startswith("duplicate rate")]
    # the rate it is named for (2 of every 3 rows repeat an earlier one), not the share of unique values
    assert duplicates.observed.startswith("share 0.66") and "allowed 0.0500" in duplicates.observed
    assert duplicates.unexpected_count == 2 * len(positives)
    assert duplicates.examples and duplicates.examples[0]["sentence"] in {line.split("\t")[0] for line in positives}
    assert "duplicate rate" in str(failure) and "share 0.66" in str(failure)


def test_an_official_eval_split_that_overlaps_train_runs_unedited_with_eval_overlap_drop(tmp_path: Path, sst2: Path):
    """Some public benchmarks' official test split repeats training rows: by default that is leakage
    (refused); with validate.eval_overlap=drop the corpus passes as it is, prepare drops those rows
    from train, and the count is in the validation report, the prepare report and the model lineage."""
    import json

    from bertops.data.prepare import load_prepared, prepare

    corpus = _corpus(tmp_path / "c", sst2)
    train_lines = (corpus / "train.tsv").read_text().splitlines()
    dev_lines = (corpus / "dev.tsv").read_text().splitlines()
    (corpus / "dev.tsv").write_text("\n".join(dev_lines + train_lines[1:11]) + "\n")
    assert any("leakage" in c.name for c in _failure(corpus, tmp_path).report.failures)

    cfg = smoke_config([f"ingest.path={corpus}", "validate.eval_overlap=drop", "prepare.max_train_rows=0"])
    ingest(cfg, tmp_path)
    report = validate(cfg, tmp_path)
    [note] = [c for c in report.checks if "eval_overlap=drop" in c.name]
    assert report.success and note.observed == 10
    result = prepare(cfg, tmp_path)
    assert result.dropped_leaks == 10
    frames, _, meta = load_prepared(cfg, tmp_path)
    assert meta["eval_overlap_dropped_from_train"] == 10
    train_texts = set(frames["train"]["text"]) | set(frames["validation"]["text"])
    assert not train_texts & set(frames["eval"]["text"])
    assert json.loads((tmp_path / "reports/prepare/prepare.json").read_text())["dropped_leaks"] == 10


def test_control_characters_are_flagged_past_their_bound_and_stripped_by_prepare(tmp_path: Path, sst2: Path):
    from bertops.data.prepare import load_prepared, prepare

    corpus = _corpus(tmp_path / "c", sst2)
    lines = (corpus / "train.tsv").read_text().splitlines()
    dirty = [lines[0]] + [line.replace(" ", "\x00 ", 1) if i % 10 == 0 else line for i, line in enumerate(lines[1:])]
    (corpus / "train.tsv").write_text("\n".join(dirty) + "\n")
    failure = _failure(corpus, tmp_path)  # 10% of the texts > max_control_char_share 0.01
    [check] = [c for c in failure.report.failures if c.name.startswith("control characters")]
    assert check.unexpected_count == 30 and "\x00" in check.examples[0]["sentence"]

    cfg = smoke_config([f"ingest.path={corpus}", "validate.max_control_char_share=0.2", "prepare.max_train_rows=0"])
    ingest(cfg, tmp_path)
    validate(cfg, tmp_path)
    prepare(cfg, tmp_path)
    frames, _, meta = load_prepared(cfg, tmp_path)
    assert meta["rows_with_control_characters_stripped"] == {"train": 30, "eval": 0}
    assert not any("\x00" in text for frame in frames.values() for text in frame["text"])


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
