"""`evaluate`: metrics of the fine-tuned model on the held-out eval split -> JSON + markdown."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bertops.config import Config
from bertops.evaluation.metrics import classification_metrics
from bertops.models.classifier import load_classifier


def markdown_summary(metrics: dict) -> str:
    lines = [
        f"## Evaluation on {metrics['examples']} held-out examples", "",
        f"accuracy **{metrics['accuracy']:.4f}**, macro-F1 **{metrics['macro_f1']:.4f}**, ECE {metrics['ece']:.4f}", "",
        "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |",
    ]
    for name, c in metrics["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
    labels = metrics["labels"]
    lines += ["", "Confusion matrix (rows: true, columns: predicted)", "",
              "| | " + " | ".join(labels) + " |", "| --- " * (len(labels) + 1) + "|"]
    for name, row in zip(labels, metrics["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def evaluate(config: Config, root: Path = Path(".")) -> dict:
    """Evaluate models/<dataset> on the prepared eval split; write reports/evaluate/*."""
    import torch

    from bertops.data.prepare import load_prepared
    from bertops.training.loop import predict_logits

    frames, id2label, _ = load_prepared(config, root)
    model_dir = root / config.paths.models / config.ingest.dataset
    model, tokenizer = load_classifier(model_dir)
    if model.config.num_labels != len(id2label):
        raise ValueError(f"{model_dir} predicts {model.config.num_labels} labels but the corpus has {len(id2label)}")
    evals = frames["eval"]
    logits = predict_logits(model, evals["input_ids"].map(list).tolist(), tokenizer.pad_token_id,
                            config.evaluate.batch_size, torch.device("cpu"))
    labels = [id2label[i] for i in range(len(id2label))]
    metrics = classification_metrics(logits, evals["label"].to_numpy(), labels, config.evaluate.ece_bins)
    metrics["model_dir"] = str(model_dir)

    out_dir = root / config.paths.reports / "evaluate"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(
        {k: round(metrics[k], 4) for k in ("accuracy", "macro_f1", "ece")} | {"examples": metrics["examples"]}, indent=2) + "\n")
    (out_dir / "summary.md").write_text(markdown_summary(metrics))
    np.save(out_dir / "logits.npy", logits)  # paired predictions for later champion/challenger tests
    return metrics
