"""NER evaluation: entity-level precision / recall / F1 (seqeval semantics) overall and per type,
the /tag serving cost, and the production tagger re-scored on the same sentences."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from bertops.config import Config
from bertops.evaluation.evaluate import Evaluation
from bertops.tasks.ner.core import (
    entity_scores,
)
from bertops.tasks.ner.finetune import predict_tags


def load_tagger(model_dir: Path, device: str = "cpu"):
    from transformers import AutoModelForTokenClassification

    from bertops.models.classifier import load_model_folder

    return load_model_folder(model_dir, AutoModelForTokenClassification, device)


def tag_request(model, tokenizer, max_length: int):
    """One /tag request as the endpoint serves it: raw text -> entities with character offsets."""
    from bertops.tasks.ner.core import spans_to_entities, split_words, word_scores

    def request(text: str) -> list[dict]:
        words = split_words(text)
        if not words:
            return []
        encoded = tokenizer(
            [[w for w, _, _ in words]],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[0].numpy()
        ids, scores = word_scores(logits, encoded.word_ids(0), num_words=len(words))
        return spans_to_entities(text, words, [model.config.id2label[i] for i in ids], scores)

    return request


def evaluate(config: Config, root: Path) -> Evaluation:
    """Entity P/R/F1 on the eval split (overall and per type), serving cost, champion comparison."""
    from bertops.data.prepare import load_prepared
    from bertops.evaluation.serving_cost import model_size_mb, time_against_champion
    from bertops.models.classifier import checked_candidate

    frames, id2label, meta = load_prepared(config, root)
    model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
    model, tokenizer = load_tagger(model_dir)
    evals = frames["eval"]
    gold = evals["tags"].map(list).tolist()
    predicted = predict_tags(
        model, evals, model.config.id2label, tokenizer.pad_token_id, config.evaluate.batch_size, torch.device("cpu")
    )
    scores = entity_scores(gold, predicted)
    texts = [" ".join(tokens) for tokens in evals["tokens"].map(list)]
    request = tag_request(model, tokenizer, config.prepare.max_length)
    champion = score_ner_champion(config, root, evals, gold)
    latency, against = time_against_champion(
        request,
        champion[1] if champion else None,
        texts,
        config.evaluate.latency_requests,
        config.evaluate.latency_rounds,
    )
    metrics = {
        "task": "ner",
        "examples": len(evals),
        "entity_f1": scores["f1"],
        "entity_precision": scores["precision"],
        "entity_recall": scores["recall"],
        "per_type": scores["per_type"],
        "model_sha256": lineage["model_sha256"],
        "model_dir": str(model_dir),
        "truncated_sentences": int(evals["truncated"].sum()),
        "serving": {"runtime": "torch", "model_size_mb": model_size_mb(model_dir), "latency": latency},
        "champion": {**champion[0], **(against or {})} if champion else None,
    }
    return Evaluation(metrics, metrics, markdown_summary(metrics))


def score_ner_champion(config: Config, root: Path, evals: pd.DataFrame, gold: list[list[str]]):
    """(The production tagger re-scored on the same sentences, its /tag request) or None."""
    from bertops.model_store import production_model

    found = production_model(config, root)
    if found is None:
        return None
    version, path = found
    model, tokenizer = load_tagger(path)
    predicted = predict_tags(
        model, evals, model.config.id2label, tokenizer.pad_token_id, config.evaluate.batch_size, torch.device("cpu")
    )
    scores = {"version": version, "entity_f1": entity_scores(gold, predicted)["f1"]}
    return scores, tag_request(model, tokenizer, config.prepare.max_length)


def markdown_summary(metrics: dict) -> str:
    lines = [
        f"## Entity-level evaluation on {metrics['examples']} sentences",
        "",
        f"entity F1 **{metrics['entity_f1']:.4f}** (precision {metrics['entity_precision']:.4f}, recall "
        f"{metrics['entity_recall']:.4f}; seqeval/conlleval semantics)",
        "",
        "| type | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in sorted(metrics["per_type"].items()):
        lines.append(f"| {kind} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    lat = metrics["serving"]["latency"]
    lines += [
        "",
        f"Serving cost: {metrics['serving']['model_size_mb']} MB of weights; one /tag request p50 "
        f"{lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms",
    ]
    if metrics.get("champion"):
        lines.append(f"Production {metrics['champion']['version']}: entity F1 {metrics['champion']['entity_f1']:.4f}")
    return "\n".join(lines) + "\n"
