"""QA evaluation: exact match and F1 as the official v1.1 script, the /answer serving cost, and the
production reader re-scored on the same questions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from bertops.config import Config
from bertops.evaluation.evaluate import Evaluation
from bertops.tasks.qa.core import (
    QAExample,
    build_features,
    squad_scores,
)
from bertops.tasks.qa.finetune import predict_spans
from bertops.tasks.qa.prepare import load_split


def load_reader(model_dir: Path, device: str = "cpu"):
    from transformers import AutoModelForQuestionAnswering

    from bertops.models.classifier import load_model_folder

    return load_model_folder(model_dir, AutoModelForQuestionAnswering, device)


def answer_request(model, tokenizer, config: Config):
    """One /answer request as the endpoint serves it: (question, context) -> best span."""
    prep = config.prepare

    def request(item: tuple[str, str]) -> dict:
        example = QAExample("q", "", item[1], item[0], [])
        features = build_features(tokenizer, [example], prep.max_length, prep.doc_stride, prep.max_query_length, False)
        frame = pd.DataFrame(
            {
                "input_ids": [f["input_ids"] for f in features],
                "example_index": [0] * len(features),
                "offsets": [[[-1, -1] if o is None else list(o) for o in f["offsets"]] for f in features],
            }
        )
        return predict_spans(
            model,
            [example],
            frame,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            8,
            config.evaluate.max_answer_tokens,
            torch.device("cpu"),
        )["q"]

    return request


def evaluate(config: Config, root: Path) -> Evaluation:
    """Exact match and F1 (official v1.1 normalisation), serving latency, the production reader re-scored."""
    from bertops.data.prepare import load_prepared
    from bertops.evaluation.serving_cost import model_size_mb, time_against_champion
    from bertops.model_store import production_model
    from bertops.models.classifier import checked_candidate

    _, _, meta = load_prepared(config, root)
    model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
    examples, features = load_split(config, root, "eval")

    def scores_of(model, tokenizer) -> dict:
        predicted = predict_spans(
            model,
            examples,
            features,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            config.evaluate.batch_size,
            config.evaluate.max_answer_tokens,
            torch.device("cpu"),
        )
        return squad_scores({k: v["text"] for k, v in predicted.items()}, examples)

    model, tokenizer = load_reader(model_dir)
    scores = scores_of(model, tokenizer)
    requests = [(e.question, e.context) for e in examples[:50]]
    champion, champion_request = None, None
    found = production_model(config, root)
    if found is not None:
        version, path = found
        champion_model, champion_tokenizer = load_reader(path)
        scored = scores_of(champion_model, champion_tokenizer)
        champion = {
            "version": version,
            "f1": round(scored["f1"] / 100, 4),
            "exact_match": round(scored["exact_match"] / 100, 4),
        }
        champion_request = answer_request(champion_model, champion_tokenizer, config)
    latency, against = time_against_champion(
        answer_request(model, tokenizer, config),
        champion_request,
        requests,
        config.evaluate.latency_requests,
        config.evaluate.latency_rounds,
    )
    metrics = {
        "task": "qa",
        "examples": len(examples),
        "articles": meta["articles"]["eval"],
        "exact_match": round(scores["exact_match"] / 100, 4),
        "f1": round(scores["f1"] / 100, 4),
        "model_sha256": lineage["model_sha256"],
        "model_dir": str(model_dir),
        "serving": {"runtime": "torch", "model_size_mb": model_size_mb(model_dir), "latency": latency},
        "champion": {**champion, **(against or {})} if champion else None,
    }
    lat = metrics["serving"]["latency"]
    summary = (
        f"## Extractive QA on {metrics['examples']} questions of {metrics['articles']} held-out articles\n\n"
        f"exact match **{metrics['exact_match']:.4f}**, F1 **{metrics['f1']:.4f}** (official SQuAD v1.1 "
        f"normalisation)\n\nServing cost: {metrics['serving']['model_size_mb']} MB; one /answer request p50 "
        f"{lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms\n"
    )
    return Evaluation(metrics, metrics, summary)
