"""NER corpus checks: the CoNLL files parsed (a row with the wrong column count names its line), then GX
on a table of one row per token (tag in the declared set, IOB2 order, no blank token), naming file lines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bertops.config import Config, ConfigError
from bertops.data.validation import Check, CheckResult, CorpusUnreadable, ValidationSuite
from bertops.tasks.ner.core import (
    OUTSIDE,
    ConllFormatError,
    Sentence,
    read_conll,
)

SPLITS = ("train", "validation", "eval")


def raw_sentences(config: Config, root: Path) -> tuple[dict[str, list[Sentence]], dict]:
    """The ingested CoNLL files, parsed per split, and the ingest manifest."""
    from bertops.data.sources import raw_manifest

    out_dir, manifest = raw_manifest(config, root)
    return {split: read_conll(out_dir / name) for split, name in manifest["files"].items()}, manifest


def declared_tags(config: Config) -> list[str]:
    """The tag set from `ingest.labels` ("O" first: label id 0 is "no entity")."""
    tags = list(config.ingest.labels.values())
    if OUTSIDE not in tags:
        raise ConfigError(f"ingest.labels for ner must include {OUTSIDE!r} (outside any entity); got {tags}")
    return [OUTSIDE] + [t for t in tags if t != OUTSIDE]


def token_table(sentences: list[Sentence]) -> pd.DataFrame:
    """One row per token, indexed by (file line - 1) so a failure's "row" is the file's line."""
    rows, index = [], []
    for sentence in sentences:
        previous = None
        for offset, (token, tag) in enumerate(zip(sentence.tokens, sentence.tags)):
            kind = tag[2:] if tag[:2] in ("B-", "I-") else None
            iob2 = not tag.startswith("I-") or (
                previous is not None and previous[2:] == kind and previous[:2] in ("B-", "I-")
            )
            rows.append(
                {
                    "line": sentence.line + offset,
                    "token": token,
                    "tag": tag,
                    "previous_tag": previous or "(sentence start)",
                    "iob2_ok": iob2,
                }
            )
            index.append(sentence.line + offset - 1)
            previous = tag
    return pd.DataFrame(rows, index=index, columns=["line", "token", "tag", "previous_tag", "iob2_ok"])


def validation_suite(config: Config, root: Path) -> ValidationSuite:
    """GX checks per split on the token table; a file that cannot be parsed fails with its line."""
    try:
        splits, manifest = raw_sentences(config, root)
    except ConllFormatError as exc:  # a row with the wrong number of columns: named by file and line
        raise CorpusUnreadable("CoNLL rows have the same number of columns", exc) from None
    tags = declared_tags(config)
    checks, tables = [], {}
    for split, sentences in splits.items():
        tables[split] = token_table(sentences)
        checks += [
            Check(
                split,
                "tags inside the declared tag set",
                "ExpectColumnValuesToBeInSet",
                {"column": "tag", "value_set": tags},
            ),
            Check(
                split,
                "IOB2: an I-X tag follows B-X or I-X",
                "ExpectColumnValuesToBeInSet",
                {"column": "iob2_ok", "value_set": [True]},
            ),
            Check(split, "tokens are not blank", "ExpectColumnValuesToMatchRegex", {"column": "token", "regex": r"\S"}),
        ]
    # GX sees token rows; the size rule is about sentences
    sizes = [
        CheckResult(
            split,
            "at least min_rows sentences",
            "sentence count",
            len(sentences) >= config.validate_.min_rows,
            observed=len(sentences),
        )
        for split, sentences in splits.items()
    ]
    return ValidationSuite(
        checks,
        tables,
        ["line", "token", "tag", "previous_tag"],
        {split: len(sentences) for split, sentences in splits.items()},
        manifest["data_hash"],
        sizes,
    )
