"""The records a validation suite is made of: a `Check` (one expectation on one table) and what
was found (`CheckResult`, with a few offending rows). Plain data, shared by the stage and the GX adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Check:
    """One expectation on one table: `kind` is the GX expectation class name."""

    table: str  # "train", "eval" or SHARE_TABLE
    name: str  # short user-facing name, e.g. "labels inside the label set"
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
                value = (
                    value.item() if hasattr(value, "item") and not isinstance(value, str) else value
                )  # numpy scalars
                record[column] = value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
        rows.append(record)
    return rows
