"""The classification corpus checks: text present, not blank, valid UTF-8, length bounds, labels in the
declared set, duplicate rate, eval examples not in train (leakage) and class balance."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bertops.config import Config
from bertops.data.sources import load_raw
from bertops.data.validation import Check, CheckResult, ValidationSuite
from bertops.encoding import CONTROL_CHARACTERS

LEAK_COLUMN = "leaks_from_train"


EXAMPLE_COLUMN = "example"  # the whole input: the text, or "text ||| second sentence" for pairs


SHARE_TABLE = "label_shares"
REPEAT_COLUMN = "repeats_an_earlier_row"
CONTROL_COLUMN = "has_control_characters"


def build_checks(config: Config, splits: list[str]) -> list[Check]:
    """The suite, from config: one list of checks per table."""
    ing, val = config.ingest, config.validate_
    text, label = ing.text_column, ing.label_column
    checks: list[Check] = []
    for split in splits:
        checks += [
            Check(split, "at least min_rows rows", "ExpectTableRowCountToBeBetween", {"min_value": val.min_rows}),
            Check(split, f"text column {text!r} present", "ExpectColumnToExist", {"column": text}),
            Check(split, f"label column {label!r} present", "ExpectColumnToExist", {"column": label}),
            Check(split, "text is never null", "ExpectColumnValuesToNotBeNull", {"column": text}),
            Check(
                split,
                "text length within bounds",
                "ExpectColumnValueLengthsToBeBetween",
                {"column": text, "min_value": val.min_text_chars, "max_value": val.max_text_chars},
            ),
            Check(split, "text is not blank", "ExpectColumnValuesToMatchRegex", {"column": text, "regex": r"\S"}),
            # Undecodable bytes were read as U+FFFD (see sources.read_table).
            Check(
                split, "text is valid UTF-8", "ExpectColumnValuesToNotMatchRegex", {"column": text, "regex": "\ufffd"}
            ),
            Check(
                split,
                "labels inside the declared label set",
                "ExpectColumnValuesToBeInSet",
                {"column": label, "value_set": sorted(ing.labels)},
            ),
            Check(
                split,
                f"duplicate rate (rows repeating an earlier example) <= max_duplicate_rate {val.max_duplicate_rate}",
                "ExpectColumnValuesToBeInSet",
                {"column": REPEAT_COLUMN, "value_set": [False], "mostly": 1.0 - val.max_duplicate_rate},
            ),
            Check(
                split,
                f"control characters (NUL, ...) in <= max_control_char_share {val.max_control_char_share} of texts",
                "ExpectColumnValuesToBeInSet",
                {"column": CONTROL_COLUMN, "value_set": [False], "mostly": 1.0 - val.max_control_char_share},
            ),
        ]
        if ing.text_pair_column:
            pair = ing.text_pair_column
            checks += [
                Check(split, f"second-sentence column {pair!r} present", "ExpectColumnToExist", {"column": pair}),
                Check(split, "every pair has its second sentence", "ExpectColumnValuesToNotBeNull", {"column": pair}),
                Check(
                    split,
                    "second sentence is not blank",
                    "ExpectColumnValuesToMatchRegex",
                    {"column": pair, "regex": r"\S"},
                ),
                Check(
                    split,
                    "second sentence length within bounds",
                    "ExpectColumnValueLengthsToBeBetween",
                    {"column": pair, "min_value": val.min_text_chars, "max_value": val.max_text_chars},
                ),
            ]
    if "eval" in splits and val.eval_overlap == "fail":
        checks.append(
            Check(
                "eval",
                "no exact duplicates of train examples (leakage)",
                "ExpectColumnValuesToBeInSet",
                {"column": LEAK_COLUMN, "value_set": [False]},
            )
        )
    checks.append(
        Check(
            SHARE_TABLE,
            "class balance within bounds",
            "ExpectColumnValuesToBeBetween",
            {"column": "share", "min_value": val.min_class_share, "max_value": val.max_class_share},
        )
    )
    return checks


def derived_tables(config: Config, frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables the checks run on: the splits (eval gains a leakage flag) and label shares."""
    text, label, pair = config.ingest.text_column, config.ingest.label_column, config.ingest.text_pair_column
    tables = {split: frame.copy() for split, frame in frames.items()}
    for table in tables.values():
        if text in table.columns:
            key = table[text].astype(str)
            if pair and pair in table.columns:
                key = key + " ||| " + table[pair].astype(str)
            table[EXAMPLE_COLUMN] = key.where(table[text].notna(), None)
            table[REPEAT_COLUMN] = table[EXAMPLE_COLUMN].duplicated(keep="first") & table[text].notna()
            table[CONTROL_COLUMN] = key.str.contains(CONTROL_CHARACTERS, regex=True)
    train = tables["train"]
    if "eval" in tables and EXAMPLE_COLUMN in tables["eval"].columns:
        train_examples = set(train[EXAMPLE_COLUMN]) if EXAMPLE_COLUMN in train.columns else set()
        tables["eval"][LEAK_COLUMN] = tables["eval"][EXAMPLE_COLUMN].isin(train_examples)
    counts = train[label].value_counts() if label in train.columns else pd.Series(dtype=int)
    total = max(int(counts.sum()), 1)
    tables[SHARE_TABLE] = pd.DataFrame(
        {"label": list(config.ingest.labels), "share": [counts.get(k, 0) / total for k in config.ingest.labels]}
    )
    return tables


def overlap_note(config: Config, tables: dict[str, pd.DataFrame]) -> list[CheckResult]:
    """validate.eval_overlap=drop: the eval examples that are also in train are not a failure
    (prepare drops them from train); how many there are is recorded in the report."""
    if config.validate_.eval_overlap != "drop" or "eval" not in tables or LEAK_COLUMN not in tables["eval"]:
        return []
    shared = int(tables["eval"][LEAK_COLUMN].sum())
    return [
        CheckResult(
            "eval",
            "eval examples also in train: dropped from train by prepare (eval_overlap=drop)",
            "count",
            True,
            observed=shared,
        )
    ]


def validation_suite(config: Config, root: Path) -> ValidationSuite:
    """The checks on the source tables (+ the leakage flag and the label-share table)."""
    frames, manifest = load_raw(config, root)
    ing = config.ingest
    tables = derived_tables(config, frames)
    return ValidationSuite(
        build_checks(config, list(frames)),
        tables,
        [c for c in (ing.text_column, ing.text_pair_column, ing.label_column) if c],
        {k: len(v) for k, v in frames.items()},
        manifest["data_hash"],
        overlap_note(config, tables),
    )
