"""The stage hooks of sequence classification (`ingest.task: classification`): one text, or a sentence
pair (`ingest.text_pair_column`), -> one label.

validate: GX checks per split on the source table (text present, not blank, valid UTF-8, length
  bounds, labels in the declared set, duplicate rate, eval examples not in train, class balance);
prepare: normalise, de-duplicate, split stratified (validation carved from train for checkpoint
  selection), drop train rows that leak into eval, tokenize through `bertops.encoding`;
finetune: a classification head (cls / mean / siamese pooling) selected on validation accuracy;
evaluate: accuracy, macro-F1, per-class, ECE, slices, behavioural checks, serving cost and the
  production model re-scored on the same examples (paired bootstrap + McNemar);
package: ONNX fp32 + int8 exported and checked against PyTorch; served by `service:Classification`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bertops.tasks.classification.core as core
from bertops.atomic import replace_dir, staging_dir
from bertops.config import Config
from bertops.data.prepare import (
    PrepareResult,
    load_prepared,
    require_validated,
    stratified_split,
    subsample,
    token_stats,
)
from bertops.data.sources import DataSourceError, load_raw
from bertops.data.validation import Check, ValidationSuite
from bertops.encoding import encode, normalize_input, normalize_text
from bertops.evaluation.behaviour import load_cases, run_behaviour
from bertops.evaluation.evaluate import Evaluation
from bertops.evaluation.gate import GateRules, paired_accuracy_rules
from bertops.evaluation.metrics import classification_metrics, softmax
from bertops.evaluation.serving_cost import latency_profile, model_size_mb, serving_request
from bertops.evaluation.slices import slice_masks, slice_metrics
from bertops.evaluation.stats import compare
from bertops.lineage import ArtifactMismatch, files_sha256
from bertops.models.classifier import build_classifier, checked_candidate, fit_pair_head, load_classifier
from bertops.models.pretrained import describe_model_source, load_tokenizer
from bertops.packaging import production_model
from bertops.tasks.base import Task
from bertops.training.loop import TrainingSpec
from bertops.training.predict import accuracy_score, predict_logits

LEAK_COLUMN = "leaks_from_train"
EXAMPLE_COLUMN = "example"  # the whole input: the text, or "text ||| second sentence" for pairs
SHARE_TABLE = "label_shares"


# -- validate ------------------------------------------------------------------------------------


def build_checks(config: Config, splits: list[str]) -> list[Check]:
    """The suite, from config: one list of checks per table."""
    ing, val = config.ingest, config.validate_
    text, label = ing.text_column, ing.label_column
    checks: list[Check] = []
    for split in splits:
        checks += [
            Check(split, "at least min_rows rows", "ExpectTableRowCountToBeBetween", {"min_value": val.min_rows}),
            Check(split, f"text column {text!r} present", "ExpectColumnToExist", {"column": text}),
            Check(split, f"label column {label!r} present", "ExpectColumnToExist", {"column": label}),
            Check(split, "text is never null", "ExpectColumnValuesToNotBeNull", {"column": text}),
            Check(
                split,
                "text length within bounds",
                "ExpectColumnValueLengthsToBeBetween",
                {"column": text, "min_value": val.min_text_chars, "max_value": val.max_text_chars},
            ),
            Check(split, "text is not blank", "ExpectColumnValuesToMatchRegex", {"column": text, "regex": r"\S"}),
            # Undecodable bytes were read as U+FFFD (see sources.read_table).
            Check(
                split, "text is valid UTF-8", "ExpectColumnValuesToNotMatchRegex", {"column": text, "regex": "\ufffd"}
            ),
            Check(
                split,
                "labels inside the declared label set",
                "ExpectColumnValuesToBeInSet",
                {"column": label, "value_set": sorted(ing.labels)},
            ),
            Check(
                split,
                "duplicate rate under max_duplicate_rate",
                "ExpectColumnProportionOfUniqueValuesToBeBetween",
                {"column": EXAMPLE_COLUMN, "min_value": 1.0 - val.max_duplicate_rate},
            ),
        ]
        if ing.text_pair_column:
            pair = ing.text_pair_column
            checks += [
                Check(split, f"second-sentence column {pair!r} present", "ExpectColumnToExist", {"column": pair}),
                Check(split, "every pair has its second sentence", "ExpectColumnValuesToNotBeNull", {"column": pair}),
                Check(
                    split,
                    "second sentence is not blank",
                    "ExpectColumnValuesToMatchRegex",
                    {"column": pair, "regex": r"\S"},
                ),
                Check(
                    split,
                    "second sentence length within bounds",
                    "ExpectColumnValueLengthsToBeBetween",
                    {"column": pair, "min_value": val.min_text_chars, "max_value": val.max_text_chars},
                ),
            ]
    if "eval" in splits:
        checks.append(
            Check(
                "eval",
                "no exact duplicates of train examples (leakage)",
                "ExpectColumnValuesToBeInSet",
                {"column": LEAK_COLUMN, "value_set": [False]},
            )
        )
    checks.append(
        Check(
            SHARE_TABLE,
            "class balance within bounds",
            "ExpectColumnValuesToBeBetween",
            {"column": "share", "min_value": val.min_class_share, "max_value": val.max_class_share},
        )
    )
    return checks


def derived_tables(config: Config, frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables the checks run on: the splits (eval gains a leakage flag) and label shares."""
    text, label, pair = config.ingest.text_column, config.ingest.label_column, config.ingest.text_pair_column
    tables = {split: frame.copy() for split, frame in frames.items()}
    for table in tables.values():
        if text in table.columns:
            key = table[text].astype(str)
            if pair and pair in table.columns:
                key = key + " ||| " + table[pair].astype(str)
            table[EXAMPLE_COLUMN] = key.where(table[text].notna(), None)
    train = tables["train"]
    if "eval" in tables and EXAMPLE_COLUMN in tables["eval"].columns:
        train_examples = set(train[EXAMPLE_COLUMN]) if EXAMPLE_COLUMN in train.columns else set()
        tables["eval"][LEAK_COLUMN] = tables["eval"][EXAMPLE_COLUMN].isin(train_examples)
    counts = train[label].value_counts() if label in train.columns else pd.Series(dtype=int)
    total = max(int(counts.sum()), 1)
    tables[SHARE_TABLE] = pd.DataFrame(
        {"label": list(config.ingest.labels), "share": [counts.get(k, 0) / total for k in config.ingest.labels]}
    )
    return tables


def validation_suite(config: Config, root: Path) -> ValidationSuite:
    """The checks on the source tables (+ the leakage flag and the label-share table)."""
    frames, manifest = load_raw(config, root)
    ing = config.ingest
    return ValidationSuite(
        build_checks(config, list(frames)),
        derived_tables(config, frames),
        [c for c in (ing.text_column, ing.text_pair_column, ing.label_column) if c],
        {k: len(v) for k, v in frames.items()},
        manifest["data_hash"],
    )


# -- prepare -------------------------------------------------------------------------------------


def to_examples(frame: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Source columns -> (text, label id); label ids follow the order of `ingest.labels`."""
    ing, prep = config.ingest, config.prepare
    label_ids = {raw: i for i, raw in enumerate(ing.labels)}
    unknown = sorted({str(v) for v in frame[ing.label_column]} - set(label_ids))
    if unknown:
        raise DataSourceError(
            f"labels {unknown[:5]} are not in ingest.labels {sorted(label_ids)}; "
            "run `bertops validate` for the offending rows, or declare them in ingest.labels"
        )
    columns = {"text": [normalize_text(t, prep.unicode_form, prep.lowercase) for t in frame[ing.text_column]]}
    if ing.text_pair_column:
        columns["text_pair"] = [
            normalize_text(str(t), prep.unicode_form, prep.lowercase) if isinstance(t, str) else ""
            for t in frame[ing.text_pair_column]
        ]
    out = pd.DataFrame({**columns, "label": [label_ids[str(v)] for v in frame[ing.label_column]]})
    keep = out["text"] != ""
    if ing.text_pair_column:
        keep &= out["text_pair"] != ""
    return out[keep].reset_index(drop=True)


def example_keys(frame: pd.DataFrame) -> pd.Series:
    """What makes an example itself: its text, or its (text, second sentence) pair."""
    return frame["text"] + " ||| " + frame["text_pair"] if "text_pair" in frame.columns else frame["text"]


def model_inputs(frame: pd.DataFrame) -> list:
    """The model's inputs for a prepared frame: texts, or (text, second sentence) pairs."""
    if "text_pair" in frame.columns:
        return list(zip(frame["text"], frame["text_pair"]))
    return frame["text"].tolist()


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop repeated examples, keeping the first occurrence."""
    kept = frame[~example_keys(frame).duplicated(keep="first")].reset_index(drop=True)
    return kept, len(frame) - len(kept)


def remove_leaks(train: pd.DataFrame, evals: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop train rows whose (normalised) example is also an eval example; eval stays comparable."""
    leaked = example_keys(train).isin(set(example_keys(evals)))
    return train[~leaked].reset_index(drop=True), int(leaked.sum())


def prepare(config: Config, root: Path) -> PrepareResult:
    """Raw corpus -> normalised, de-duplicated, leak-free, tokenized train/validation/eval files."""
    frames, manifest = load_raw(config, root)
    require_validated(config, root, manifest["data_hash"])
    prep = config.prepare
    train, dup_train = deduplicate(to_examples(frames["train"], config))
    dropped = {"train": dup_train}
    if "eval" in frames:
        evals, dropped["eval"] = deduplicate(to_examples(frames["eval"], config))
    else:
        train, evals = stratified_split(train, prep.eval_fraction, prep.seed)
    train, leaks = remove_leaks(train, evals)
    train = subsample(train, prep.max_train_rows, prep.seed)
    evals = subsample(evals, prep.max_eval_rows, prep.seed)
    # Checkpoint selection gets its own slice of train, so the eval figures stay unbiased.
    train, validation = stratified_split(train, prep.validation_fraction, prep.seed + 1)
    for split, frame in (("train", train), ("validation", validation), ("eval", evals)):
        if frame.empty:
            raise DataSourceError(
                f"the {split} split is empty after de-duplication, leak removal and splitting; the corpus is too "
                "small or overlaps eval (check prepare.max_train_rows, prepare.validation_fraction, eval_fraction)"
            )

    tokenizer = load_tokenizer(config.finetune.model)
    stats, histograms = {}, []
    out_dir = root / config.paths.prepared / config.ingest.dataset
    staging = staging_dir(out_dir)  # written in full, then swapped in: never a mix of old and new
    for split, frame in (("train", train), ("validation", validation), ("eval", evals)):
        # Lengths before truncation, for honest statistics; ids cut to max_length as serving cuts them.
        encoded = encode(tokenizer, model_inputs(frame), prep.max_length)
        lengths = encoded.lengths
        frame = frame.assign(input_ids=encoded.input_ids)
        frame.to_parquet(staging / f"{split}.parquet", index=False)
        stats[split] = token_stats(lengths, prep.max_length)
        counts, edges = np.histogram(lengths, bins=np.arange(0, max(lengths) + 9, 8))
        histograms += [{"split": split, "tokens": int(e), "examples": int(c)} for e, c in zip(edges[:-1], counts)]

    label_names = list(config.ingest.labels.values())
    (staging / "labels.json").write_text(json.dumps({"id2label": dict(enumerate(label_names))}, indent=2) + "\n")
    prepared_hash = files_sha256(
        [staging / f"{s}.parquet" for s in ("train", "validation", "eval")] + [staging / "labels.json"]
    )
    (staging / "meta.json").write_text(
        json.dumps(
            {
                "dataset": config.ingest.dataset,
                "data_hash": manifest["data_hash"],
                "prepared_hash": prepared_hash,
                "tokenizer": config.finetune.model,
                "max_length": prep.max_length,
            },
            indent=2,
        )
        + "\n"
    )
    replace_dir(staging, out_dir)
    reports = root / config.paths.reports / "prepare"
    reports.mkdir(parents=True, exist_ok=True)
    rows = {"train": len(train), "validation": len(validation), "eval": len(evals)}
    result = PrepareResult(str(out_dir), rows, dropped, leaks, stats)
    (reports / "token_stats.json").write_text(json.dumps({"rows": result.rows, "tokens": stats}, indent=2) + "\n")
    pd.DataFrame(histograms).to_csv(reports / "token_lengths.csv", index=False)
    (reports / "prepare.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


# -- finetune ------------------------------------------------------------------------------------


def training_spec(config: Config, root: Path) -> TrainingSpec:
    """A sequence-classification head on `finetune.model`, selected on validation accuracy."""
    cfg = config.finetune
    tokenizer = load_tokenizer(cfg.model)
    lineage: dict = {}

    def probe_head(model, train_ids, train_labels, device, precision) -> None:
        """finetune.pooling=siamese: start from a head fit to the frozen encoder (linear probe)."""
        lineage["linear_probe"] = fit_pair_head(
            model,
            train_ids,
            train_labels,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            device,
            config.evaluate.batch_size,
        )

    return TrainingSpec(
        stage="finetune",
        section=cfg,
        tokenizer=cfg.model,
        parent=describe_model_source(cfg.model),
        build=lambda id2label: build_classifier(cfg.model, cfg.pooling, id2label, cfg.dropout),
        out_dir=root / config.paths.models / config.ingest.dataset,
        prepare=probe_head if cfg.pooling == "siamese" else None,
        evaluate_start=cfg.pooling == "siamese",
        lineage=lineage,
        score=accuracy_score(tokenizer.pad_token_id, tokenizer.sep_token_id, config.evaluate.batch_size),
    )


# -- evaluate ------------------------------------------------------------------------------------

# metrics.json: what the gate reads (the full report.json adds per-class figures and failures).
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


# -- package -------------------------------------------------------------------------------------


def export_for_serving(config: Config, root: Path, model_dir: Path) -> dict:
    """Export ONNX fp32 + int8 into the model folder and check both against PyTorch on the eval
    split; pick the CPU runtime. A runtime asked for by name that failed its check is refused."""
    from bertops.models.export import ExportCheckFailed
    from bertops.models.export import export_for_serving as export

    frames, _, _ = load_prepared(config, root)
    evals = frames["eval"]
    serve = config.serve
    report = export(
        model_dir,
        model_inputs(evals),
        evals["label"].to_numpy(),
        config.prepare.max_length,
        serve.onnx_max_abs_diff,
        serve.int8_max_accuracy_drop,
    )
    passed = [r for r in ("onnx-int8", "onnx") if report["runtimes"][r]["passed"]]
    if serve.runtime in ("onnx-int8", "onnx") and serve.runtime not in passed:
        detail = report["runtimes"][serve.runtime]
        raise ExportCheckFailed(
            f"serve.runtime={serve.runtime} failed its agreement check with PyTorch (max |logit diff| "
            f"{detail['max_abs_logit_diff']:.2e}, accuracy {detail['accuracy']:.4f} vs "
            f"{report['torch_accuracy']:.4f}); "
            f"it is not served. Use serve.runtime=auto or torch"
        )
    report["cpu_runtime"] = serve.runtime if serve.runtime != "auto" else (passed[0] if passed else "torch")
    return report


class ClassificationTask(Task):
    name = "classification"
    service = "service:Classification"
    route = "/classify"

    def validation_suite(self, config: Config, root: Path) -> ValidationSuite:
        return validation_suite(config, root)

    def prepare(self, config: Config, root: Path) -> PrepareResult:
        return prepare(config, root)

    def training_spec(self, config: Config, root: Path) -> TrainingSpec:
        return training_spec(config, root)

    def evaluate(self, config: Config, root: Path) -> Evaluation:
        return evaluate(config, root)

    def gate_rules(self, policy) -> GateRules:
        return paired_accuracy_rules(policy)

    def export_for_serving(self, config: Config, root: Path, model_dir: Path) -> dict:
        return export_for_serving(config, root, model_dir)

    def serving_settings(self, config: Config) -> dict:
        return {"text_pairs": bool(config.ingest.text_pair_column)}

    def bento_files(self) -> dict[str, Path]:
        return {"bertops_classification_core.py": Path(core.__file__)}
