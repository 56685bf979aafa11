"""What the shared loop trains for QA: a span head (start/end logits), selected on validation SQuAD F1."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from bertops.config import Config
from bertops.data.batching import Batch, bucketed_batches, collate
from bertops.tasks.qa.core import (
    QAExample,
    postprocess,
    squad_scores,
)
from bertops.tasks.qa.prepare import load_split
from bertops.training.loop import TrainingSpec
from bertops.training.preserve import refuse_preservation
from bertops.training.setup import autocast


def collate_spans(sequences: list[list[int]], spans: list[tuple[int, int]], pad_id: int, sep_id: int | None) -> Batch:
    """Padded windows with segment ids (question 0, context 1) and (B, 2) start/end targets."""
    batch = collate(sequences, None, pad_id, sep_id)
    batch.labels = torch.as_tensor(spans, dtype=torch.long)
    return batch


@torch.no_grad()
def predict_spans(
    model,
    examples: list[QAExample],
    features: pd.DataFrame,
    pad_id: int,
    sep_id: int,
    batch_size: int,
    max_answer_tokens: int,
    device: torch.device,
    precision: str = "fp32",
) -> dict:
    """{question id: {"text", "start", "end", "score"}} over all of its windows."""
    was_training = model.training
    model.eval()
    sequences = features["input_ids"].map(list).tolist()
    starts: list = [None] * len(sequences)
    ends: list = [None] * len(sequences)
    for index in bucketed_batches([len(s) for s in sequences], batch_size, 1, seed=0, shuffle=False):
        batch = collate([sequences[i] for i in index], None, pad_id, sep_id).to(device)
        with autocast(device, precision):
            out = model(**batch.inputs())
        for row, i in enumerate(index):
            starts[i] = out.start_logits[row].float().cpu().numpy()
            ends[i] = out.end_logits[row].float().cpu().numpy()
    model.train(was_training)
    windows = [
        {"example_index": int(e), "offsets": [None if o[0] < 0 else (int(o[0]), int(o[1])) for o in offsets]}
        for e, offsets in zip(features["example_index"], features["offsets"])
    ]
    return postprocess(examples, windows, starts, ends, max_answer_length=max_answer_tokens)


def training_spec(config: Config, root: Path) -> TrainingSpec:
    """The shared loop with a span head (start/end logits), selected on validation SQuAD F1."""
    from transformers import AutoModelForQuestionAnswering

    from bertops.models.pretrained import describe_model_source, load_tokenizer, resolve_model_source

    cfg = config.finetune
    refuse_preservation(cfg, "QA")
    tokenizer = load_tokenizer(cfg.model)
    validation_examples, _ = load_split(config, root, "validation")

    def build(_):
        return AutoModelForQuestionAnswering.from_pretrained(
            resolve_model_source(cfg.model), hidden_dropout_prob=cfg.dropout, attn_implementation="sdpa"
        )

    def loss(model, batch: Batch, index) -> torch.Tensor:
        assert batch.labels is not None  # collate_spans always sets the (B, 2) start/end targets
        return model(**batch.inputs(), start_positions=batch.labels[:, 0], end_positions=batch.labels[:, 1]).loss

    def score(model, frame: pd.DataFrame, device: torch.device, precision: str) -> float:
        predicted = predict_spans(
            model,
            validation_examples,
            frame,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            config.evaluate.batch_size,
            config.evaluate.max_answer_tokens,
            device,
            precision,
        )
        return squad_scores({k: v["text"] for k, v in predicted.items()}, validation_examples)["f1"] / 100

    return TrainingSpec(
        stage="finetune",
        section=cfg,
        build=build,
        tokenizer=cfg.model,
        parent=describe_model_source(cfg.model),
        out_dir=root / config.paths.models / config.ingest.dataset,
        lineage={"task": "qa"},
        loss=loss,
        targets=lambda frame: list(zip(frame["start_position"].tolist(), frame["end_position"].tolist())),
        collate=collate_spans,
        score=score,
        metric="squad_f1",
    )
