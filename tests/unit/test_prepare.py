import pandas as pd
import pytest

from bertops.data.prepare import stratified_split, subsample, whole_text_split
from bertops.encoding import normalize_text
from bertops.tasks.classification.prepare import deduplicate, remove_leaks, to_examples
from tests.conftest import smoke_config


def test_normalize_collapses_whitespace_and_composes_unicode():
    assert normalize_text("  cafe\u0301 \t ok\n\n") == "caf\u00e9 ok"
    assert normalize_text("A  B", lowercase=True) == "a b"


def test_to_examples_maps_labels_in_config_order():
    cfg = smoke_config()
    frame = pd.DataFrame({"sentence": ["good ", " bad", "   "], "label": ["1", "0", "1"]})
    out = to_examples(frame, cfg)
    assert out["text"].tolist() == ["good", "bad"]  # blank text dropped after normalising
    assert out["label"].tolist() == [1, 0]


def test_deduplicate_keeps_first():
    frame = pd.DataFrame({"text": ["a", "b", "a"], "label": [0, 1, 1]})
    kept, dropped = deduplicate(frame)
    assert kept["text"].tolist() == ["a", "b"] and kept["label"].tolist() == [0, 1] and dropped == 1


def test_stratified_split_is_disjoint_stratified_and_deterministic():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(1000)], "label": [0] * 800 + [1] * 200})
    train, evals = stratified_split(frame, 0.1, seed=7)
    assert len(train) + len(evals) == 1000
    assert not set(train["text"]) & set(evals["text"])
    assert evals["label"].value_counts().to_dict() == {0: 80, 1: 20}
    again, _ = stratified_split(frame, 0.1, seed=7)
    assert train["text"].tolist() == again["text"].tolist()


def test_rare_labels_still_reach_both_sides():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(52)], "label": [0] * 50 + [1] * 2})
    train, evals = stratified_split(frame, 0.1, seed=0)
    assert set(train["label"]) == {0, 1} and set(evals["label"]) == {0, 1}


def test_remove_leaks_drops_train_copies_of_eval_texts():
    train = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    evals = pd.DataFrame({"text": ["b"], "label": [1]})
    kept, leaks = remove_leaks(train, evals)
    assert kept["text"].tolist() == ["a", "c"] and leaks == 1


@pytest.mark.parametrize("rows, expected", [(0, 100), (500, 100), (20, 20)])
def test_subsample(rows, expected):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": [0, 1] * 50})
    out = subsample(frame, rows, seed=1)
    assert len(out) == expected
    if rows == 20:
        assert out["label"].value_counts().to_dict() == {0: 10, 1: 10}


def test_labels_outside_the_declared_set_are_refused_by_name():
    from bertops.data.sources import DataSourceError

    frame = pd.DataFrame({"sentence": ["good"], "label": ["2"]})
    with pytest.raises(DataSourceError, match=r"labels \['2'\] are not in ingest.labels"):
        to_examples(frame, smoke_config())


def test_prepare_refuses_a_corpus_that_was_not_validated(tmp_path):
    import json

    from bertops.data.ingest import ingest
    from bertops.data.prepare import ValidationFailedBefore, prepare

    cfg = smoke_config()
    ingest(cfg, tmp_path)
    with pytest.raises(ValidationFailedBefore, match="run `bertops validate` first"):
        prepare(cfg, tmp_path)
    report = tmp_path / "reports/validate/report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"data_hash": "something-else", "success": True}))
    with pytest.raises(ValidationFailedBefore, match="changed since it was validated"):
        prepare(cfg, tmp_path)
    manifest = json.loads((tmp_path / "data/raw/sst2/manifest.json").read_text())
    report.write_text(json.dumps({"data_hash": manifest["data_hash"], "success": False}))
    with pytest.raises(ValidationFailedBefore, match="failed validation"):
        prepare(cfg, tmp_path)
    assert not (tmp_path / "data/prepared").exists()


def _phrase_corpus(sentences: int = 40) -> pd.DataFrame:
    """A phrase-level corpus like SST-2's train: each sentence and some of its phrases, labelled."""
    rows = []
    for i in range(sentences):
        sentence = f"movie {i} was a truly remarkable piece number {i}"
        label = i % 2
        rows.append((sentence, label))
        rows += [(f"movie {i} was", label), (f"remarkable piece number {i}", label), ("a truly", label)]
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return frame[~frame["text"].duplicated()].reset_index(drop=True)


def test_whole_text_carve_keeps_every_phrase_of_a_validation_text_out_of_train():
    frame = _phrase_corpus()
    train, validation, dropped = whole_text_split(frame, frame["text"], 0.25, seed=3)
    sentences = {t for t in frame["text"] if t.startswith("movie") and t.endswith(t.split()[1])}
    assert set(validation["text"]) <= sentences  # whole texts only, never a phrase
    assert len(validation) == 10 and sorted(validation["label"].value_counts()) == [5, 5]  # stratified
    for text in validation["text"]:
        number = text.split()[1]
        # neither the sentence nor its own phrases are in train; shared phrases ("a truly") are
        assert text not in set(train["text"])
        assert f"movie {number} was" not in set(train["text"])
        assert f"remarkable piece number {number}" not in set(train["text"])
    assert "a truly" not in set(train["text"])  # a phrase of a chosen text leaves train, even if shared
    assert dropped == 2 * len(validation) + 1 and len(train) + len(validation) + dropped == len(frame)
    assert {f"movie {n} was" for n in range(40)} - set(train["text"]) == {
        f"movie {t.split()[1]} was" for t in validation["text"]
    }  # the phrases of the sentences left in train stay
    # deterministic
    again, validation_again, _ = whole_text_split(frame, frame["text"], 0.25, seed=3)
    assert again.equals(train) and validation_again.equals(validation)


def test_without_phrase_rows_the_whole_text_carve_is_the_stratified_split():
    frame = pd.DataFrame(
        {"text": [f"review number {i} of {i * 7}" for i in range(60)], "label": [i % 3 for i in range(60)]}
    )
    train, validation, dropped = whole_text_split(frame, frame["text"], 0.2, seed=5)
    expected_train, expected_validation = stratified_split(frame, 0.2, seed=5)
    assert dropped == 0
    assert train.equals(expected_train) and validation.reset_index(drop=True).equals(expected_validation)
