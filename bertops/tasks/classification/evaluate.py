"""Classification evaluation on the runtime that will be served: the candidate is exported (ONNX
fp32 + int8, checked against PyTorch on the validation slice), `serve.runtime` picks the runtime,
and accuracy, macro-F1, per-class figures, ECE, slices, behavioural checks and the serving cost all
come from that runtime. The production model is re-scored on the same examples on the runtime *it*
serves (paired bootstrap + McNemar) and timed in the same alternating rounds; the gate judges it
with the paired accuracy rules."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bertops.atomic import replace_dir, staging_dir
from bertops.config import Config
from bertops.data.prepare import load_prepared
from bertops.encoding import encode, normalize_input
from bertops.evaluation.behaviour import load_cases, run_behaviour
from bertops.evaluation.evaluate import Evaluation
from bertops.evaluation.metrics import classification_metrics
from bertops.evaluation.serving_cost import model_size_mb, serving_request, time_against_champion
from bertops.evaluation.slices import slice_masks, slice_metrics
from bertops.evaluation.stats import compare
from bertops.lineage import ArtifactMismatch
from bertops.model_store import production_model
from bertops.models.classifier import checked_candidate, load_classifier
from bertops.models.export import served_runtime_of, serving_export_dir
from bertops.tasks.classification.core import softmax
from bertops.tasks.classification.prepare import model_inputs
from bertops.training.predict import predict_logits

GATE_KEYS = (
    "accuracy",
    "macro_f1",
    "ece",
    "examples",
    "model_sha256",
    "distilled_from",
    "slices",
    "behaviour",
    "serving",
    "champion",
)
MIN_CHECK_EXAMPLES = 500  # the agreement check's examples: the validation slice, topped up from train


@dataclass
class Runtime:
    """A classifier on one runtime: batched probabilities, and one request as the endpoint runs it."""

    name: str  # torch | onnx | onnx-int8
    predict: Callable[[list], np.ndarray]  # texts (or pairs) -> probabilities
    request: Callable[[object], np.ndarray]  # one text (or pair) -> probabilities
    size_mb: float  # what the runtime loads: the ONNX file, or the weights
    sha256: str | None  # the ONNX file's; None for torch (the model's weights are model_sha256)


def open_runtime(name: str, model_dir: Path, onnx_dir: Path, model, tokenizer, config: Config) -> Runtime:
    """`name` on the model in `model_dir` (PyTorch) or its export in `onnx_dir`, normalising and
    encoding as training and the endpoint do."""
    from bertops.lineage import file_sha256
    from bertops.models.export import FILES, model_feeds, onnx_session, session_logits

    prep = config.prepare

    def normalise(inputs: list) -> list:
        return [normalize_input(x, prep.unicode_form, prep.lowercase) for x in inputs]

    if name == "torch":

        def predict(inputs: list) -> np.ndarray:
            ids = encode(tokenizer, normalise(inputs), prep.max_length).input_ids
            logits = predict_logits(
                model,
                ids,
                tokenizer.pad_token_id,
                config.evaluate.batch_size,
                torch.device("cpu"),
                sep_id=tokenizer.sep_token_id,
            )
            return softmax(logits)

        request = serving_request(model, tokenizer, prep.max_length, prep.unicode_form, prep.lowercase)
        return Runtime(name, predict, request, model_size_mb(model_dir), None)
    path = onnx_dir / FILES[name]
    session = onnx_session(path)

    def predict_onnx(inputs: list) -> np.ndarray:
        return softmax(
            session_logits(session, tokenizer, normalise(inputs), prep.max_length, config.evaluate.batch_size)
        )

    def request_onnx(item) -> np.ndarray:
        return softmax(session.run(["logits"], model_feeds(tokenizer, normalise([item]), prep.max_length))[0])

    return Runtime(name, predict_onnx, request_onnx, round(path.stat().st_size / 1e6, 2), file_sha256(path))


def check_examples(frames: dict[str, pd.DataFrame], seed: int) -> pd.DataFrame:
    """The examples the exported runtimes are checked on: the validation slice carved from train,
    topped up with train rows to MIN_CHECK_EXAMPLES (the *drop* from PyTorch to int8 on the same
    rows is what is judged, so rows the model trained on serve; the eval split is never used to
    choose a runtime)."""
    validation = frames["validation"]
    missing = MIN_CHECK_EXAMPLES - len(validation)
    if missing <= 0:
        return validation
    extra = frames["train"].sample(n=min(missing, len(frames["train"])), random_state=seed)
    return pd.concat([validation, extra], ignore_index=True)


def export_candidate(config: Config, root: Path, model_dir: Path, frames: dict[str, pd.DataFrame]) -> dict:
    """Export the candidate's ONNX runtimes into models/<dataset>-serving (replaced as a whole),
    check them on the validation slice and choose the served one (`report["runtime"]`)."""
    from bertops.models.export import choose_runtime, export_for_serving

    target = serving_export_dir(config, root)
    serve = config.serve
    staging = staging_dir(target)
    try:  # a failed export or a refused runtime leaves the previous export as it was
        if serve.runtime == "torch":  # nothing to export: PyTorch is served as trained
            report: dict = {"runtimes": {}, "note": "serve.runtime=torch: no ONNX export"}
        else:
            checks = check_examples(frames, config.prepare.seed)
            report = export_for_serving(
                model_dir,
                model_inputs(checks),
                checks["label"].to_numpy(),
                config.prepare.max_length,
                serve.onnx_max_abs_diff,
                serve.int8_max_accuracy_drop,
                target=staging,
            )
            topped_up = len(checks) - len(frames["validation"])
            report["checked_on"] = "validation slice carved from train" + (
                f" + {topped_up} train rows" if topped_up else ""
            )
        report["runtime"] = choose_runtime(report, serve.runtime)  # refuses a named runtime that failed
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    replace_dir(staging, target)
    return report


def score_champion(
    config: Config,
    root: Path,
    texts: list,
    y_true: np.ndarray,
    candidate_correct: np.ndarray,
    labels: list[str],
    masks: dict[str, np.ndarray],
) -> tuple[dict, Runtime] | None:
    """Score the production model, on the runtime it serves, on the very same eval examples and
    compare (paired), overall and per slice."""
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
    lineage = json.loads((path / "lineage.json").read_text()) if (path / "lineage.json").is_file() else {}
    runtime = open_runtime(served_runtime_of(path, lineage), path, path / "onnx", model, tokenizer, config)
    champion_correct = runtime.predict(texts).argmax(-1) == y_true
    gate = config.gate

    def paired(mask: np.ndarray) -> dict:
        result = compare(
            candidate_correct[mask], champion_correct[mask], gate.confidence, gate.bootstrap_resamples, seed=0
        )
        return {"accuracy": float(champion_correct[mask].mean()), **result.__dict__}

    report = {
        "version": version,
        "runtime": runtime.name,
        "model_sha256": lineage.get("model_sha256"),
        **paired(np.ones(len(y_true), dtype=bool)),
        "slices": {name: paired(mask) for name, mask in masks.items() if mask.any()},
    }
    return report, runtime


def behaviour_report(config: Config, root: Path, predict, labels: list[str]) -> dict | None:
    if config.evaluate.behaviour is None:
        return None
    path = config.evaluate.behaviour if config.evaluate.behaviour.is_absolute() else root / config.evaluate.behaviour
    return run_behaviour(load_cases(path), predict, labels)


def evaluate(config: Config, root: Path) -> Evaluation:
    """Accuracy, macro-F1, per-class figures, ECE, slices, behaviour, serving cost and the paired
    champion comparison of the candidate, on the runtime it will be served on, on the prepared eval split."""
    frames, id2label, meta = load_prepared(config, root)
    model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
    model, tokenizer = load_classifier(model_dir)
    if model.config.num_labels != len(id2label):
        raise ArtifactMismatch(
            f"{model_dir} predicts {model.config.num_labels} labels, the corpus has {len(id2label)}; "
            "re-run `bertops finetune` (or `dvc repro`) before evaluating"
        )
    export = export_candidate(config, root, model_dir, frames)
    served = open_runtime(
        export["runtime"], model_dir, serving_export_dir(config, root) / "onnx", model, tokenizer, config
    )
    evals = frames["eval"]
    texts, y_true = evals["text"].tolist(), evals["label"].to_numpy()
    inputs = model_inputs(evals)  # the texts, or (text, second sentence) pairs
    labels = [id2label[i] for i in range(len(id2label))]
    probs = served.predict(inputs)
    y_pred = probs.argmax(-1)
    metrics = classification_metrics(np.log(np.clip(probs, 1e-12, None)), y_true, labels, config.evaluate.ece_bins)
    masks = slice_masks(texts, evals["input_ids"].map(len).to_numpy(), config.evaluate.slices)
    metrics["slices"] = slice_metrics(y_true, y_pred, masks, len(labels))
    metrics["behaviour"] = behaviour_report(config, root, served.predict, labels)
    champion = score_champion(config, root, inputs, y_true, y_pred == y_true, labels, masks)
    latency, against = time_against_champion(
        served.request,
        champion[1].request if champion else None,
        inputs,
        config.evaluate.latency_requests,
        config.evaluate.latency_rounds,
    )
    metrics["serving"] = {
        "runtime": served.name,
        "runtime_sha256": served.sha256,
        "model_size_mb": served.size_mb,
        "latency": latency,
        "export": export,
    }
    metrics["model_dir"] = str(model_dir)
    metrics["model_sha256"] = lineage["model_sha256"]
    # A distilled student names its teacher's weights: the gate's speed trade is for a student of production.
    metrics["distilled_from"] = (lineage.get("teacher") or {}).get("model_sha256")
    metrics["champion"] = {**champion[0], **(against or {})} if champion else None
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
            f"Judged on the runtime that will be served: **{serving.get('runtime', 'torch')}** "
            f"({serving['model_size_mb']} MB); one request p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms "
            f"(medians of {lat.get('rounds', 1)} rounds, {lat['requests']} requests, in-process)",
        ]
    return "\n".join(lines) + "\n"
