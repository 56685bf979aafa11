"""Packaging of the ner task: what its drift profile reads (served by PyTorch, no export)."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Config


def monitor_inputs(config: Config, root: Path) -> list:
    """The eval split's sentences as raw text (their words joined by spaces, as a user sends them)."""
    import pandas as pd

    frame = pd.read_parquet(root / config.paths.prepared / config.ingest.dataset / "eval.parquet")
    return [" ".join(tokens) for tokens in frame["tokens"]]
