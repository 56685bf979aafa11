"""Classification packaging: the runtime the gate judged, shipped as those very bytes. `evaluate`
exported and checked the ONNX runtimes (models/<dataset>-serving) and scored the one
`serve.runtime` picks; this copies that export into the packaged model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bertops.config import Config
from bertops.lineage import ArtifactMismatch
from bertops.models.export import serving_export_dir


def export_for_serving(config: Config, root: Path, model_dir: Path) -> dict:
    """Copy the judged export (its ONNX files and checks) into the packaged model folder; the
    report names the judged runtime (`runtime`) and each file's sha256, which `package` checks
    against the gate decision."""
    source = serving_export_dir(config, root)
    report_path = source / "export.json"
    if not report_path.is_file():
        raise ArtifactMismatch(
            f"no serving export at {source} (evaluate writes it); run `bertops evaluate` and `bertops gate`"
        )
    report = json.loads(report_path.read_text())
    if (source / "onnx").is_dir():
        shutil.copytree(source / "onnx", model_dir / "onnx", dirs_exist_ok=True)
    return report


def serving_settings(config: Config) -> dict:
    """Task settings the service reads at start-up."""
    return {"text_pairs": bool(config.ingest.text_pair_column)}


def monitor_inputs(config: Config, root: Path) -> list:
    """The eval split's texts, or (text, second sentence) pairs, for the drift reference profile."""
    import pandas as pd

    frame = pd.read_parquet(root / config.paths.prepared / config.ingest.dataset / "eval.parquet")
    if "text_pair" in frame.columns:
        return list(zip(frame["text"], frame["text_pair"]))
    return frame["text"].tolist()
