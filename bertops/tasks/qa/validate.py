"""QA corpus checks: the SQuAD structure (a broken one names where), then GX on a table of one row per
question: answer text at its offset, question and context not blank, an answer each, unique ids."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bertops.config import Config
from bertops.data.validation import Check, CorpusUnreadable, ValidationSuite
from bertops.tasks.qa.core import (
    QAExample,
    SquadFormatError,
    read_squad,
)

SPLITS = ("train", "validation", "eval")


def raw_examples(config: Config, root: Path) -> tuple[list[QAExample], dict]:
    """Every question of the ingested SQuAD files (pooled; prepare splits them by article)."""
    from bertops.data.sources import raw_manifest

    out_dir, manifest = raw_manifest(config, root)
    return [e for name in manifest["files"].values() for e in read_squad(out_dir / name)], manifest


def question_table(examples: list[QAExample]) -> pd.DataFrame:
    """One row per question; `answer_matches` is False when some answer's text is not the
    context's text at its offset (the row shows both)."""
    rows = []
    for example in examples:
        found = [example.context[start : start + len(text)] for text, start in example.answers]
        bad = [(text, got, start) for (text, start), got in zip(example.answers, found) if text != got]
        rows.append(
            {
                "id": example.id,
                "article": example.title,
                "question": example.question,
                "context_chars": len(example.context),
                "answers": len(example.answers),
                "context_blank": not example.context.strip(),
                "answer_matches": not bad,
                "answer_text": bad[0][0] if bad else (example.answers[0][0] if example.answers else None),
                "context_at_offset": bad[0][1] if bad else None,
                "answer_start": bad[0][2] if bad else (example.answers[0][1] if example.answers else None),
            }
        )
    return pd.DataFrame(rows)


def validation_suite(config: Config, root: Path) -> ValidationSuite:
    """GX checks on the question table; a file whose structure is broken fails naming where."""
    try:
        examples, manifest = raw_examples(config, root)
    except SquadFormatError as exc:
        raise CorpusUnreadable("SQuAD v1.1 structure (data -> paragraphs -> qas)", exc) from None
    table = "train"
    checks = [
        Check(
            table,
            "at least min_rows questions",
            "ExpectTableRowCountToBeBetween",
            {"min_value": config.validate_.min_rows},
        ),
        Check(table, "question ids are unique", "ExpectColumnValuesToBeUnique", {"column": "id"}),
        Check(table, "question is not blank", "ExpectColumnValuesToMatchRegex", {"column": "question", "regex": r"\S"}),
        Check(
            table,
            "context is not blank",
            "ExpectColumnValuesToBeInSet",
            {"column": "context_blank", "value_set": [False]},
        ),
        Check(
            table,
            "every question has an answer",
            "ExpectColumnValuesToBeBetween",
            {"column": "answers", "min_value": 1},
        ),
        Check(
            table,
            "answer text matches the context at answer_start",
            "ExpectColumnValuesToBeInSet",
            {"column": "answer_matches", "value_set": [True]},
        ),
    ]
    return ValidationSuite(
        checks,
        {table: question_table(examples)},
        ["id", "article", "answer_text", "context_at_offset", "answer_start", "question"],
        {table: len(examples)},
        manifest["data_hash"],
    )
