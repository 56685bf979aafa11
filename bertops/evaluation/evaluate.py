"""`evaluate`: everything the gate weighs, for the fine-tuned model, written as JSON + markdown.

- quality on the held-out eval split: accuracy, macro-F1, per-class P/R/F1, confusion matrix, ECE;
- the same per slice (`evaluate.slices`);
- behavioural checks (`evaluate.behaviour`, CheckList-style cases in a data file);
- serving cost: weights on disk, p50/p95 latency of one request on the serving path;
- the production model (if any) re-scored on the very same examples, compared pairwise overall
  and per slice (paired bootstrap CI + McNemar).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from bertops.config import Config
from bertops.evaluation.metrics import classification_metrics, softmax
from bertops.evaluation.slices import slice_masks, slice_metrics
from bertops.lineage import ArtifactMismatch
from bertops.models.classifier import checked_candidate, load_classifier

# metrics.json: what the gate reads (the full report.json adds per-class figures and failures).
GATE_KEYS = ("accuracy", "macro_f1", "ece", "examples", "model_sha256", "slices", "behaviour", "serving", "champion")


def probability_fn(model, tokenizer, config: Config) -> Callable[[list], np.ndarray]:
    """texts (or (text, second sentence) pairs) -> probabilities, normalised and tokenized exactly
    as training and serving do."""
    import torch

    from bertops.data.prepare import encode_inputs, normalize_text
    from bertops.training.loop import predict_logits

    prep = config.prepare

    def norm(text: str) -> str:
        return normalize_text(text, prep.unicode_form, prep.lowercase)

    def predict(inputs: list) -> np.ndarray:
        inputs = [tuple(norm(t) for t in x) if isinstance(x, (tuple, list)) else norm(x) for x in inputs]
        ids = encode_inputs(tokenizer, inputs, truncation=True, max_length=prep.max_length)["input_ids"]
        return softmax(predict_logits(model, ids, tokenizer.pad_token_id, config.evaluate.batch_size, torch.device("cpu"),
                                      sep_id=tokenizer.sep_token_id))

    return predict


def score_champion(config: Config, root: Path, texts: list, y_true: np.ndarray, candidate_correct: np.ndarray,
                   labels: list[str], masks: dict[str, np.ndarray]) -> dict | None:
    """Score the production model on the very same eval examples and compare (paired), overall
    and per slice."""
    from bertops.evaluation.stats import compare
    from bertops.packaging import production_model

    found = production_model(config, root)
    if found is None:
        return None
    version, path = found
    model, tokenizer = load_classifier(path)
    if [model.config.id2label[i] for i in range(model.config.num_labels)] != labels:
        raise ArtifactMismatch(f"production {version} predicts labels {model.config.id2label}, the candidate {labels}; "
                               "they cannot be compared on the same examples")
    champion_correct = probability_fn(model, tokenizer, config)(texts).argmax(-1) == y_true
    # The champion's serving latency, timed the same way and in the same run (the speed trade compares them).
    latency = serving_cost(model, tokenizer, path, texts, config)["latency"]
    gate = config.gate

    def paired(mask: np.ndarray) -> dict:
        result = compare(candidate_correct[mask], champion_correct[mask], gate.confidence, gate.bootstrap_resamples,
                         seed=0)
        return {"accuracy": float(champion_correct[mask].mean()), **result.__dict__}

    return {"version": version, "latency": latency, **paired(np.ones(len(y_true), dtype=bool)),
            "slices": {name: paired(mask) for name, mask in masks.items() if mask.any()}}


def serving_cost(model, tokenizer, model_dir: Path, texts: list, config: Config) -> dict:
    from bertops.data.prepare import normalize_text
    from bertops.evaluation.serving_cost import latency_profile, model_size_mb, serving_request

    prep = config.prepare
    request = serving_request(model, tokenizer, prep.max_length,
                              lambda t: normalize_text(t, prep.unicode_form, prep.lowercase))
    return {"model_size_mb": model_size_mb(model_dir),
            "latency": latency_profile(request, texts, config.evaluate.latency_requests)}


def behaviour_report(config: Config, root: Path, predict, labels: list[str]) -> dict | None:
    from bertops.evaluation.behaviour import load_cases, run_behaviour

    if config.evaluate.behaviour is None:
        return None
    path = config.evaluate.behaviour if config.evaluate.behaviour.is_absolute() else root / config.evaluate.behaviour
    return run_behaviour(load_cases(path), predict, labels)


def evaluate(config: Config, root: Path = Path(".")) -> dict:
    """Evaluate models/<dataset> on the prepared eval split; write reports/evaluate/*."""
    from bertops.data.prepare import load_prepared, model_inputs

    if config.ingest.task == "ner":
        from bertops.tasks.token_classification import evaluate_ner

        return evaluate_ner(config, root)
    if config.ingest.task == "qa":
        from bertops.tasks.question_answering import evaluate_qa

        return evaluate_qa(config, root)
    frames, id2label, meta = load_prepared(config, root)
    model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
    model, tokenizer = load_classifier(model_dir)
    if model.config.num_labels != len(id2label):
        raise ArtifactMismatch(f"{model_dir} predicts {model.config.num_labels} labels, the corpus has {len(id2label)}; "
                               "re-run `bertops finetune` (or `dvc repro`) before evaluating")
    evals = frames["eval"]
    texts, y_true = evals["text"].tolist(), evals["label"].to_numpy()
    inputs = model_inputs(evals)  # the texts, or (text, second sentence) pairs
    labels = [id2label[i] for i in range(len(id2label))]
    predict = probability_fn(model, tokenizer, config)
    probs = predict(inputs)
    y_pred = probs.argmax(-1)
    metrics = classification_metrics(np.log(np.clip(probs, 1e-12, None)), y_true, labels, config.evaluate.ece_bins)
    masks = slice_masks(texts, evals["input_ids"].map(len).to_numpy(), config.evaluate.slices)
    metrics["slices"] = slice_metrics(y_true, y_pred, masks, len(labels))
    metrics["behaviour"] = behaviour_report(config, root, predict, labels)
    metrics["serving"] = serving_cost(model, tokenizer, model_dir, inputs, config)
    metrics["model_dir"] = str(model_dir)
    metrics["model_sha256"] = lineage["model_sha256"]
    metrics["champion"] = score_champion(config, root, inputs, y_true, y_pred == y_true, labels, masks)

    out_dir = root / config.paths.reports / "evaluate"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(metrics, indent=2) + "\n")
    # Full precision: the gate must not pass 0.87996 as 0.88.
    (out_dir / "metrics.json").write_text(json.dumps({k: metrics[k] for k in GATE_KEYS}, indent=2) + "\n")
    (out_dir / "summary.md").write_text(markdown_summary(metrics))
    np.save(out_dir / "probabilities.npy", probs)
    return metrics


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
    if metrics.get("slices"):
        lines += ["", "### Slices", "", "| slice | examples | accuracy | macro-F1 |", "| --- | ---: | ---: | ---: |"]
        for name, s in metrics["slices"].items():
            acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
            f1 = "-" if s["macro_f1"] is None else f"{s['macro_f1']:.4f}"
            lines.append(f"| {name} | {s['examples']} | {acc} | {f1} |")
    if metrics.get("behaviour"):
        lines += ["", "### Behavioural checks", "", "| kind | cases | passed | pass rate |", "| --- | ---: | ---: | ---: |"]
        for kind, b in metrics["behaviour"].items():
            lines.append(f"| {kind} | {b['cases']} | {b['passed']} | {b['pass_rate']:.3f} |")
    serving = metrics.get("serving")
    if serving:
        lat = serving["latency"]
        lines += ["", f"Serving cost: {serving['model_size_mb']} MB of weights; one request p50 {lat['p50_ms']:.1f} ms, "
                      f"p95 {lat['p95_ms']:.1f} ms ({lat['requests']} requests, in-process)"]
    return "\n".join(lines) + "\n"
