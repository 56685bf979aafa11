"""`validate`: the corpus checks (what is expected) and the verdict (pure), run through the
Great Expectations adapter in `bertops.data.gx_adapter`.

The checks are declared here as plain `Check` records so the rules are readable and testable;
the adapter turns each one into a GX expectation and returns what GX observed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bertops.config import Config

LEAK_COLUMN = "leaks_from_train"
EXAMPLE_COLUMN = "example"   # the whole input: the text, or "text ||| second sentence" for pairs
SHARE_TABLE = "label_shares"


class ValidationFailed(RuntimeError):
    """The corpus broke at least one expectation; the message names each one."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.summary())


@dataclass(frozen=True)
class Check:
    """One expectation on one table: `kind` is the GX expectation class name."""

    table: str                  # "train", "eval" or SHARE_TABLE
    name: str                   # short user-facing name, e.g. "labels inside the label set"
    kind: str
    kwargs: dict[str, Any]


@dataclass
class CheckResult:
    table: str
    name: str
    expectation: str
    success: bool
    observed: Any = None
    unexpected_count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ValidationReport:
    dataset: str
    data_hash: str
    success: bool
    checks: list[CheckResult]
    data_docs: str | None = None
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        if self.success:
            return f"corpus {self.dataset!r}: all {len(self.checks)} expectations passed ({self.rows})"
        lines = [f"corpus {self.dataset!r} failed {len(self.failures)} of {len(self.checks)} expectations:"]
        for check in self.failures:
            detail = f"{check.unexpected_count} offending rows" if check.unexpected_count else f"observed {check.observed}"
            lines.append(f"  - [{check.table}] {check.name} ({check.expectation}): {detail}")
            for example in check.examples:
                lines.append(f"      {json.dumps(example, ensure_ascii=False)[:200]}")
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, default=str) + "\n"


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
            Check(split, "text length within bounds", "ExpectColumnValueLengthsToBeBetween",
                  {"column": text, "min_value": val.min_text_chars, "max_value": val.max_text_chars}),
            Check(split, "text is not blank", "ExpectColumnValuesToMatchRegex", {"column": text, "regex": r"\S"}),
            # Undecodable bytes were read as U+FFFD (see sources.read_table).
            Check(split, "text is valid UTF-8", "ExpectColumnValuesToNotMatchRegex", {"column": text, "regex": "\ufffd"}),
            Check(split, "labels inside the declared label set", "ExpectColumnValuesToBeInSet",
                  {"column": label, "value_set": sorted(ing.labels)}),
            Check(split, "duplicate rate under max_duplicate_rate", "ExpectColumnProportionOfUniqueValuesToBeBetween",
                  {"column": EXAMPLE_COLUMN, "min_value": 1.0 - val.max_duplicate_rate}),
        ]
        if ing.text_pair_column:
            pair = ing.text_pair_column
            checks += [
                Check(split, f"second-sentence column {pair!r} present", "ExpectColumnToExist", {"column": pair}),
                Check(split, "every pair has its second sentence", "ExpectColumnValuesToNotBeNull", {"column": pair}),
                Check(split, "second sentence is not blank", "ExpectColumnValuesToMatchRegex", {"column": pair, "regex": r"\S"}),
                Check(split, "second sentence length within bounds", "ExpectColumnValueLengthsToBeBetween",
                      {"column": pair, "min_value": val.min_text_chars, "max_value": val.max_text_chars}),
            ]
    if "eval" in splits:
        checks.append(Check("eval", "no exact duplicates of train examples (leakage)", "ExpectColumnValuesToBeInSet",
                            {"column": LEAK_COLUMN, "value_set": [False]}))
    checks.append(Check(SHARE_TABLE, "class balance within bounds", "ExpectColumnValuesToBeBetween",
                        {"column": "share", "min_value": val.min_class_share, "max_value": val.max_class_share}))
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


def offending_examples(frame: pd.DataFrame, indices: list[Any], columns: list[str], limit: int) -> list[dict]:
    """A few offending rows, with their 1-based data row number (header excluded)."""
    rows = []
    for index in indices[:limit]:
        if index not in frame.index:
            continue
        record = {"row": int(index) + 1 if isinstance(index, int) else index}
        for column in columns:
            if column in frame.columns:
                value = frame.at[index, column]
                value = value.item() if hasattr(value, "item") and not isinstance(value, str) else value  # numpy scalars
                record[column] = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        rows.append(record)
    return rows


def unreadable(config: Config, root: Path, rule: str, error: Exception) -> None:
    """A corpus file that cannot be parsed: a failed report naming where, written, then raised."""
    manifest = json.loads((root / config.paths.raw / config.ingest.dataset / "manifest.json").read_text())
    report = verdict(config.ingest.dataset, manifest["data_hash"],
                     [CheckResult("files", rule, "parse", False, observed=str(error))], {})
    out_dir = root / config.paths.reports / "validate"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(report.to_json(), encoding="utf-8")
    raise ValidationFailed(report) from None


def verdict(dataset: str, data_hash: str, results: list[CheckResult], rows: dict[str, int]) -> ValidationReport:
    """Pure: the corpus passes only if every check passed."""
    return ValidationReport(dataset, data_hash, all(r.success for r in results), results, rows=rows)


def validate(config: Config, root: Path = Path(".")) -> ValidationReport:
    """Run the suite on the ingested corpus, write the JSON report + Data Docs, raise on failure."""
    from bertops.data import gx_adapter
    from bertops.data.sources import load_raw

    if config.ingest.task == "ner":
        from bertops.tasks.token_classification import validate_ner

        return validate_ner(config, root)
    if config.ingest.task == "qa":
        from bertops.tasks.question_answering import validate_qa

        return validate_qa(config, root)
    frames, manifest = load_raw(config, root)
    out_dir = root / config.paths.reports / "validate"
    checks = build_checks(config, list(frames))
    tables = derived_tables(config, frames)
    results, docs = gx_adapter.run_checks(
        checks, tables, out_dir / "gx",
        example_columns=[c for c in (config.ingest.text_column, config.ingest.text_pair_column, config.ingest.label_column) if c],
        examples_per_failure=config.validate_.examples_per_failure,
    )
    report = verdict(config.ingest.dataset, manifest["data_hash"], results, {k: len(v) for k, v in frames.items()})
    report.data_docs = str(docs) if docs else None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(report.to_json(), encoding="utf-8")
    if not report.success:
        raise ValidationFailed(report)
    return report
