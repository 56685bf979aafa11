"""Packaging of the qa task: what its service reads at start-up, what its drift profile reads."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Config


def serving_settings(config: Config) -> dict:
    """Task settings the service reads at start-up."""
    return {
        "doc_stride": config.prepare.doc_stride,
        "max_query_length": config.prepare.max_query_length,
        "max_answer_tokens": config.evaluate.max_answer_tokens,
    }


def monitor_inputs(config: Config, root: Path) -> list:
    """The eval split's (question, context) pairs, for the drift reference profile."""
    import pandas as pd

    frame = pd.read_parquet(root / config.paths.prepared / config.ingest.dataset / "eval-examples.parquet")
    return list(zip(frame["question"], frame["context"]))
