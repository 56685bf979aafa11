"""`validate`: run a task's corpus checks through Great Expectations and give the verdict.

Each task declares its checks as plain `Check` records (readable and testable) on tables it builds
(`Task.validation_suite`); this stage runs them through `bertops.data.gx_adapter`, writes the
report and Data Docs, and fails naming every broken expectation with example rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from bertops.config import Config
from bertops.data.checks import Check, CheckResult
from bertops.errors import BertopsError


class ValidationFailed(BertopsError, RuntimeError):
    """The corpus broke at least one expectation; the message names each one."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.summary())


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
            parts = [f"{check.unexpected_count} offending rows"] if check.unexpected_count else []
            parts += [f"observed {check.observed}"] if check.observed is not None or not parts else []
            detail = ", ".join(parts)
            lines.append(f"  - [{check.table}] {check.name} ({check.expectation}): {detail}")
            for example in check.examples:
                lines.append(f"      {json.dumps(example, ensure_ascii=False)[:200]}")
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, default=str) + "\n"


class CorpusUnreadable(BertopsError, ValueError):
    """A corpus file that cannot be parsed at all: `rule` names what it must satisfy."""

    def __init__(self, rule: str, error: Exception):
        self.rule, self.error = rule, error
        super().__init__(f"{rule}: {error}")


@dataclass
class ValidationSuite:
    """What a task hands the `validate` stage: the checks, the tables GX runs them on, and the
    rows a failure shows."""

    checks: list[Check]
    tables: dict[str, pd.DataFrame]
    example_columns: list[str]
    rows: dict[str, int]  # rows per split, for the report
    data_hash: str  # the raw corpus's hash (from the ingest manifest)
    extra_results: list[CheckResult] = field(default_factory=list)  # rules decided outside GX


def verdict(dataset: str, data_hash: str, results: list[CheckResult], rows: dict[str, int]) -> ValidationReport:
    """Pure: the corpus passes only if every check passed."""
    return ValidationReport(dataset, data_hash, all(r.success for r in results), results, rows=rows)


def _write(report: ValidationReport, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(report.to_json(), encoding="utf-8")


def validate(config: Config, root: Path = Path(".")) -> ValidationReport:
    """The `validate` stage: run the task's suite through Great Expectations, write the JSON
    report + Data Docs, raise `ValidationFailed` naming each broken expectation."""
    from bertops.data import gx_adapter
    from bertops.tasks import get_task

    out_dir = root / config.paths.reports / "validate"
    try:
        suite = get_task(config.ingest.task).validation_suite(config, root)
    except CorpusUnreadable as exc:  # e.g. a CoNLL row with the wrong column count: named by file and line
        manifest = json.loads((root / config.paths.raw / config.ingest.dataset / "manifest.json").read_text())
        report = verdict(
            config.ingest.dataset,
            manifest["data_hash"],
            [CheckResult("files", exc.rule, "parse", False, observed=str(exc.error))],
            {},
        )
        _write(report, out_dir)
        raise ValidationFailed(report) from None
    results, docs = gx_adapter.run_checks(
        suite.checks,
        suite.tables,
        out_dir / "gx",
        example_columns=suite.example_columns,
        examples_per_failure=config.validate_.examples_per_failure,
    )
    report = verdict(config.ingest.dataset, suite.data_hash, results + suite.extra_results, suite.rows)
    report.data_docs = str(docs) if docs else None
    _write(report, out_dir)
    if not report.success:
        raise ValidationFailed(report)
    return report
