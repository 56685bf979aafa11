"""Classification evaluation: accuracy, macro-F1, per-class, ECE, slices, behavioural checks, the
serving cost, and the production model re-scored on the same examples (paired bootstrap +
McNemar); the gate judges it with the paired accuracy rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bertops.config import Config
from bertops.data.prepare import (
    load_prepared,
)
from bertops.encoding import encode, normalize_input
from bertops.evaluation.behaviour import load_cases, run_behaviour
from bertops.evaluation.evaluate import Evaluation
from bertops.evaluation.metrics import classification_metrics
from bertops.evaluation.serving_cost import latency_profile, model_size_mb, serving_request
from bertops.evaluation.slices import slice_masks, slice_metrics
from bertops.evaluation.stats import compare
from bertops.lineage import ArtifactMismatch
from bertops.model_store import production_model
from bertops.models.classifier import checked_candidate, load_classifier
from bertops.tasks.classification.core import softmax
from bertops.tasks.classification.prepare import model_inputs
from bertops.training.predict import predict_logits

GATE_KEYS = ("accuracy", "macro_f1", "ece", "examples", "model_sha256", "slices", "behaviour", "serving", "champion")


def probability_fn(model, tokenizer, config: Config) -> Callable[[list], np.ndarray]:
    """texts (or (text, second sentence) pairs) -> probabilities, normalised and tokenized exactly
    as training and serving do."""
    prep = config.prepare

    def predict(inputs: list) -> np.ndarray:
        inputs = [normalize_input(x, prep.unicode_form, prep.lowercase) for x in inputs]
        ids = encode(tokenizer, inputs, prep.max_length).input_ids
        return softmax(
            predict_logits(
                model,
                ids,
                tokenizer.pad_token_id,
                config.evaluate.batch_size,
                torch.device("cpu"),
                sep_id=tokenizer.sep_token_id,
            )
        )

    return predict


def score_champion(
    config: Config,
    root: Path,
    texts: list,
    y_true: np.ndarray,
    candidate_correct: np.ndarray,
    labels: list[str],
    masks: dict[str, np.ndarray],
) -> dict | None:
    """Score the production model on the very same eval examples and compare (paired), overall
    and per slice."""
    found = production_model(config, root)
    if found is None:
        return None
    version, path = found
    model, tokenizer = load_classifier(path)
    if [model.config.id2label[i] for i in range(model.config.num_labels)] != labels:
        raise ArtifactMismatch(
            f"production {version} predicts labels {model.config.id2label}, the candidate {labels}; "
            "they cannot be compared on the same examples"
        )
    champion_correct = probability_fn(model, tokenizer, config)(texts).argmax(-1) == y_true
    # The champion's serving latency, timed the same way and in the same run (the speed trade compares them).
    latency = serving_cost(model, tokenizer, path, texts, config)["latency"]
    gate = config.gate

    def paired(mask: np.ndarray) -> dict:
        result = compare(
            candidate_correct[mask], champion_correct[mask], gate.confidence, gate.bootstrap_resamples, seed=0
        )
        return {"accuracy": float(champion_correct[mask].mean()), **result.__dict__}

    return {
        "version": version,
        "latency": latency,
        **paired(np.ones(len(y_true), dtype=bool)),
        "slices": {name: paired(mask) for name, mask in masks.items() if mask.any()},
    }


def serving_cost(model, tokenizer, model_dir: Path, texts: list, config: Config) -> dict:
    """Weights on disk and the latency of one /classify request, encoded as the endpoint encodes it."""
    prep = config.prepare
    request = serving_request(model, tokenizer, prep.max_length, prep.unicode_form, prep.lowercase)
    return {
        "model_size_mb": model_size_mb(model_dir),
        "latency": latency_profile(request, texts, config.evaluate.latency_requests),
    }


def behaviour_report(config: Config, root: Path, predict, labels: list[str]) -> dict | None:
    if config.evaluate.behaviour is None:
        return None
    path = config.evaluate.behaviour if config.evaluate.behaviour.is_absolute() else root / config.evaluate.behaviour
    return run_behaviour(load_cases(path), predict, labels)


def evaluate(config: Config, root: Path) -> Evaluation:
    """Accuracy, macro-F1, per-class figures, ECE, slices, behaviour, serving cost and the paired
    champion comparison of the candidate on the prepared eval split."""
    frames, id2label, meta = load_prepared(config, root)
    model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
    model, tokenizer = load_classifier(model_dir)
    if model.config.num_labels != len(id2label):
        raise ArtifactMismatch(
            f"{model_dir} predicts {model.config.num_labels} labels, the corpus has {len(id2label)}; "
            "re-run `bertops finetune` (or `dvc repro`) before evaluating"
        )
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
    return Evaluation(metrics, {k: metrics[k] for k in GATE_KEYS}, markdown_summary(metrics), {"probabilities": probs})


def markdown_summary(metrics: dict) -> str:
    lines = [
        f"## Evaluation on {metrics['examples']} held-out examples",
        "",
        f"accuracy **{metrics['accuracy']:.4f}**, macro-F1 **{metrics['macro_f1']:.4f}**, ECE {metrics['ece']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, c in metrics["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
    labels = metrics["labels"]
    lines += [
        "",
        "Confusion matrix (rows: true, columns: predicted)",
        "",
        "| | " + " | ".join(labels) + " |",
        "| --- " * (len(labels) + 1) + "|",
    ]
    for name, row in zip(labels, metrics["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    if metrics.get("slices"):
        lines += ["", "### Slices", "", "| slice | examples | accuracy | macro-F1 |", "| --- | ---: | ---: | ---: |"]
        for name, s in metrics["slices"].items():
            acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
            f1 = "-" if s["macro_f1"] is None else f"{s['macro_f1']:.4f}"
            lines.append(f"| {name} | {s['examples']} | {acc} | {f1} |")
    if metrics.get("behaviour"):
        lines += [
            "",
            "### Behavioural checks",
            "",
            "| kind | cases | passed | pass rate |",
            "| --- | ---: | ---: | ---: |",
        ]
        for kind, b in metrics["behaviour"].items():
            lines.append(f"| {kind} | {b['cases']} | {b['passed']} | {b['pass_rate']:.3f} |")
    serving = metrics.get("serving")
    if serving:
        lat = serving["latency"]
        lines += [
            "",
            f"Serving cost: {serving['model_size_mb']} MB of weights; one request p50 {lat['p50_ms']:.1f} ms, "
            f"p95 {lat['p95_ms']:.1f} ms ({lat['requests']} requests, in-process)",
        ]
    return "\n".join(lines) + "\n"
