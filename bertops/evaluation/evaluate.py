"""`evaluate`: the stage. The task scores its candidate on the held-out eval split (`Task.evaluate`):
quality, slices and behaviour where it has them, the serving cost on the serving path, and the
production model re-scored on the very same examples; this stage writes what it found:

- `reports/evaluate/report.json`: everything;
- `reports/evaluate/metrics.json`: what the gate reads (a DVC metric), at full precision;
- `reports/evaluate/summary.md`: the markdown summary the CLI prints and the flow publishes;
- `reports/evaluate/arrays/`: the arrays the task keeps (classification: the eval probabilities,
  `probabilities.npy`), listed in its `index.json` (a folder every task writes, so the DVC stage
  declares the same outputs whatever the task).

Whatever the task, `/embed`'s model is scored too (bertops.evaluation.embedding): the report's and
the gate's `embedding` section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertops.config import Config


@dataclass
class Evaluation:
    """What a task's evaluation found."""

    report: dict  # the full report (report.json)
    gate_metrics: dict  # what the gate reads (metrics.json); full precision
    summary: str  # markdown
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # name -> array, saved as <name>.npy


def evaluate(config: Config, root: Path = Path(".")) -> dict:
    """Score the candidate (models/<dataset>, or the student) on the prepared eval split; write reports/evaluate/*."""
    from bertops.evaluation.embedding import evaluate_embeddings, markdown
    from bertops.tasks import get_task

    result = get_task(config.ingest.task).evaluate(config, root)
    from bertops.models.classifier import candidate_dir

    model_dir = Path(result.report.get("model_dir") or candidate_dir(config, root))  # a task may not name it
    embedding = evaluate_embeddings(config, root, model_dir, result.report.get("serving") or {})
    result.report["embedding"] = result.gate_metrics["embedding"] = embedding
    result.summary += markdown(embedding)
    out_dir = root / config.paths.reports / "evaluate"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(result.report, indent=2) + "\n")
    # Full precision: the gate must not pass 0.87996 as 0.88.
    (out_dir / "metrics.json").write_text(json.dumps(result.gate_metrics, indent=2) + "\n")
    (out_dir / "summary.md").write_text(result.summary)
    write_arrays(out_dir / ARRAYS_DIR, result.arrays)
    return result.report


ARRAYS_DIR = "arrays"


def write_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """`<name>.npy` for each array and an `index.json` (name -> shape, dtype), replacing what an
    earlier evaluation left there (it may have been another task's)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    index = {name: {"shape": list(array.shape), "dtype": str(array.dtype)} for name, array in arrays.items()}
    (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n")
