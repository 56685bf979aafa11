import pandas as pd

from bertops.data.validation import CheckResult, verdict
from bertops.tasks.classification.validate import LEAK_COLUMN, SHARE_TABLE, build_checks, derived_tables
from tests.conftest import smoke_config


def test_suite_covers_every_rule_for_each_split():
    checks = build_checks(smoke_config(), ["train", "eval"])
    names = {(c.table, c.name) for c in checks}
    for split in ("train", "eval"):
        for rule in (
            "text column 'sentence' present",
            "label column 'label' present",
            "text is never null",
            "text length within bounds",
            "text is not blank",
            "text is valid UTF-8",
            "labels inside the declared label set",
            "duplicate rate (rows repeating an earlier example) <= max_duplicate_rate 0.05",
            "control characters (NUL, ...) in <= max_control_char_share 0.01 of texts",
        ):
            assert (split, rule) in names
    assert ("eval", "no exact duplicates of train examples (leakage)") in names
    # eval_overlap=drop: the overlap is prepare's to drop, not a failure
    dropping = {c.name for c in build_checks(smoke_config(["validate.eval_overlap=drop"]), ["train", "eval"])}
    assert "no exact duplicates of train examples (leakage)" not in dropping
    assert (SHARE_TABLE, "class balance within bounds") in names


def test_sentence_pairs_get_second_sentence_checks_and_pair_keys():
    cfg = smoke_config(["ingest.text_pair_column=sentence2"])
    names = {(c.table, c.name) for c in build_checks(cfg, ["train"])}
    assert ("train", "every pair has its second sentence") in names and (
        "train",
        "second sentence is not blank",
    ) in names
    frames = {
        "train": pd.DataFrame({"sentence": ["p", "p"], "sentence2": ["h1", "h2"], "label": ["1", "0"]}),
        "eval": pd.DataFrame({"sentence": ["p", "p"], "sentence2": ["h1", "h3"], "label": ["1", "0"]}),
    }
    tables = derived_tables(cfg, frames)
    # the same premise with another hypothesis is neither a duplicate nor a leak
    assert tables["train"]["example"].nunique() == 2 and tables["eval"][LEAK_COLUMN].tolist() == [True, False]


def test_no_leakage_check_without_an_eval_split():
    assert all(c.table != "eval" for c in build_checks(smoke_config(), ["train"]))


def test_derived_tables_flag_leaks_and_compute_label_shares():
    cfg = smoke_config()
    frames = {
        "train": pd.DataFrame({"sentence": ["a", "b", "c", "d"], "label": ["1", "1", "1", "0"]}),
        "eval": pd.DataFrame({"sentence": ["b", "z"], "label": ["1", "0"]}),
    }
    tables = derived_tables(cfg, frames)
    assert tables["eval"][LEAK_COLUMN].tolist() == [True, False]
    assert tables["train"]["repeats_an_earlier_row"].tolist() == [False] * 4
    assert tables[SHARE_TABLE].set_index("label")["share"].to_dict() == {"0": 0.25, "1": 0.75}
    assert LEAK_COLUMN not in frames["eval"].columns  # inputs untouched


def test_a_declared_label_with_no_rows_has_share_zero():
    tables = derived_tables(smoke_config(), {"train": pd.DataFrame({"sentence": ["a"], "label": ["1"]})})
    assert tables[SHARE_TABLE].set_index("label")["share"].to_dict() == {"0": 0.0, "1": 1.0}


def test_verdict_fails_if_any_check_failed_and_names_it():
    ok = CheckResult("train", "text is never null", "ExpectColumnValuesToNotBeNull", True)
    bad = CheckResult(
        "eval",
        "labels inside the declared label set",
        "ExpectColumnValuesToBeInSet",
        False,
        unexpected_count=2,
        examples=[{"row": 3, "label": "7"}],
    )
    report = verdict("sst2", "abc", [ok, bad], {"train": 10})
    assert not report.success and report.failures == [bad]
    assert "[eval] labels inside the declared label set" in report.summary()
    assert '"label": "7"' in report.summary()
    assert verdict("sst2", "abc", [ok], {"train": 10}).success


def test_repeats_and_control_characters_are_flagged_per_row():
    frames = {"train": pd.DataFrame({"sentence": ["a", "b", "a", "x\x00y", "a"], "label": ["1", "0", "1", "0", "1"]})}
    tables = derived_tables(smoke_config(), frames)
    assert tables["train"]["repeats_an_earlier_row"].tolist() == [False, False, True, False, True]
    assert tables["train"]["has_control_characters"].tolist() == [False, False, False, True, False]
