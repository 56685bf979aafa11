import json
from pathlib import Path

import pandas as pd
import pytest

from bertops.data.ingest import find_split_files, ingest
from bertops.data.sources import DataSourceError, load_raw, read_table
from tests.conftest import smoke_config


def test_read_each_format_keeps_strings_verbatim(tmp_path: Path):
    (tmp_path / "a.tsv").write_text('sentence\tlabel\nit\'s "fine" NA \t1\n\t0\n')
    (tmp_path / "a.csv").write_text('text,label\n"a, b",1\nNA,0\n')
    (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    pd.DataFrame({"text": ["p"], "label": [1]}).to_parquet(tmp_path / "a.parquet")
    tsv = read_table(tmp_path / "a.tsv")
    assert tsv["sentence"].tolist() == ['it\'s "fine" NA ', ""]  # no NaN coercion, quotes kept
    assert read_table(tmp_path / "a.csv")["text"].tolist() == ["a, b", "NA"]
    assert read_table(tmp_path / "a.jsonl")["label"].tolist() == ["1", "0"]
    assert read_table(tmp_path / "a.parquet")["label"].tolist() == ["1"]


def test_empty_file_reads_as_an_empty_table(tmp_path: Path):
    (tmp_path / "e.tsv").write_bytes(b"")
    assert read_table(tmp_path / "e.tsv").empty


def test_invalid_utf8_bytes_become_replacement_characters(tmp_path: Path):
    (tmp_path / "bad.tsv").write_bytes(b"sentence\tlabel\ngood\t1\nbad \xff\xfe text\t0\n")
    texts = read_table(tmp_path / "bad.tsv")["sentence"].tolist()
    assert texts[0] == "good" and "\ufffd" in texts[1]


def test_unsupported_type_and_bad_jsonl_are_explained(tmp_path: Path):
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataSourceError, match="unsupported file type"):
        read_table(tmp_path / "x.xlsx")
    (tmp_path / "x.jsonl").write_text('{"a": 1}\nnot json\n')
    with pytest.raises(DataSourceError, match=r"x.jsonl:2"):
        read_table(tmp_path / "x.jsonl")


def test_split_files_are_found_by_name(tmp_path: Path):
    (tmp_path / "train.csv").write_text("text,label\n")
    (tmp_path / "dev.csv").write_text("text,label\n")
    found = find_split_files(tmp_path)
    assert found["train"].name == "train.csv" and found["eval"].name == "dev.csv"
    (tmp_path / "train.csv").unlink()
    with pytest.raises(DataSourceError, match="no train file"):
        find_split_files(tmp_path)


def test_ingest_copies_bytes_and_writes_a_manifest(tmp_path: Path, sst2: Path):
    cfg = smoke_config()
    result = ingest(cfg, tmp_path)
    raw = tmp_path / "data/raw/sst2"
    assert (raw / "train.tsv").read_bytes() == (sst2 / "train.tsv").read_bytes()
    assert (raw / "eval.tsv").read_bytes() == (sst2 / "dev.tsv").read_bytes()
    assert json.loads((raw / "manifest.json").read_text())["data_hash"] == result.data_hash
    frames, _ = load_raw(cfg, tmp_path)
    assert len(frames["train"]) == 67349 and len(frames["eval"]) == 872


def test_ingest_of_a_single_file_path(tmp_path: Path):
    src = tmp_path / "corpus.jsonl"
    src.write_text('{"sentence": "a", "label": 1}\n')
    result = ingest(smoke_config([f"ingest.path={src}"]), tmp_path)
    assert result.files == {"train": "train.jsonl"}


def test_two_clones_ingesting_the_same_bytes_write_the_same_manifest(tmp_path: Path, monkeypatch):
    """The manifest is part of the corpus version DVC hashes: it names the source as params.yaml
    does (the search path as written, $VARIABLES unexpanded), not where a clone or the datasets lie."""
    manifests = []
    for clone in ("alice/ws", "bob/elsewhere/ws"):
        root = tmp_path / clone
        (root / "corpus").mkdir(parents=True)
        (root / "corpus" / "train.tsv").write_text("sentence\tlabel\na fine film\t1\n")
        datasets = tmp_path / clone / ".." / "datasets"
        (datasets / "sst2").mkdir(parents=True)
        (datasets / "sst2" / "train.tsv").write_text("sentence\tlabel\nflat\t0\n")
        monkeypatch.setenv("MY_DATA", str(datasets.resolve()))
        for search in ("corpus", "$MY_DATA/sst2"):
            result = ingest(smoke_config([f"ingest.search_paths=['{search}']"]), root)
            assert result.source == search
            manifests.append((root / "data/raw/sst2/manifest.json").read_bytes())
    assert manifests[0] == manifests[2] and manifests[1] == manifests[3] and manifests[0] != manifests[1]


def test_no_source_anywhere_says_what_to_pass(tmp_path: Path):
    cfg = smoke_config(["ingest.search_paths=['/nonexistent/sst2']", "ingest.hub_id=null"])
    with pytest.raises(DataSourceError, match="ingest.path"):
        ingest(cfg, tmp_path)


def test_unreachable_hub_says_what_to_pass(tmp_path: Path):
    cfg = smoke_config(["ingest.search_paths=[]", "ingest.hub_id=no-such-org/no-such-dataset"])
    with pytest.raises(DataSourceError, match="-s ingest.path=PATH"):
        ingest(cfg, tmp_path)


def test_failed_ingest_keeps_the_previous_copy(tmp_path: Path):
    cfg = smoke_config()
    ingest(cfg, tmp_path)
    before = (tmp_path / "data/raw/sst2/manifest.json").read_text()
    with pytest.raises(DataSourceError):
        ingest(smoke_config(["ingest.path=/nonexistent.tsv"]), tmp_path)
    assert (tmp_path / "data/raw/sst2/manifest.json").read_text() == before
    assert [p.name for p in (tmp_path / "data/raw").iterdir()] == ["sst2"]  # no staging debris
