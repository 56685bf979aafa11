"""What the shared loop trains for NER: a token-classification head, labels padded with -100,
checkpoint selection on validation entity F1."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from bertops.config import Config
from bertops.data.batching import Batch, bucketed_batches
from bertops.tasks.ner.core import (
    IGNORE_INDEX,
    entity_scores,
    word_predictions,
)
from bertops.training.loop import TrainingSpec
from bertops.training.preserve import refuse_preservation
from bertops.training.setup import autocast


def collate_tokens(
    sequences: list[list[int]], labels: list[list[int]], pad_id: int, sep_id: int | None = None
) -> Batch:
    """Pad ids with pad_id and per-piece labels with -100 (ignored by the loss)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    targets = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    for row, (seq, lab) in enumerate(zip(sequences, labels)):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        targets[row, : len(lab)] = torch.as_tensor(lab, dtype=torch.long)
    return Batch(ids, mask, targets)


@torch.no_grad()
def predict_tags(
    model,
    frame: pd.DataFrame,
    id2label: dict[int, str],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> list[list[str]]:
    """One predicted tag per word of each sentence (read at the word's first piece)."""
    was_training = model.training
    model.eval()
    sequences = frame["input_ids"].map(list).tolist()
    word_ids = [[None if w < 0 else int(w) for w in row] for row in frame["word_ids"]]
    out: list[list[str]] = [[] for _ in sequences]
    for index in bucketed_batches([len(s) for s in sequences], batch_size, 1, seed=0, shuffle=False):
        batch = collate_tokens([sequences[i] for i in index], [[] for _ in index], pad_id).to(device)
        with autocast(device, precision):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float().cpu().numpy()
        for row, i in enumerate(index):
            ids = word_predictions(logits[row], word_ids[i], num_words=len(frame["tokens"].iloc[i]))
            out[i] = [id2label[k] for k in ids]
    model.train(was_training)
    return out


def training_spec(config: Config, root: Path) -> TrainingSpec:
    """The shared loop (checkpoints, Ray, bucketing) with a token-classification head."""
    from transformers import AutoModelForTokenClassification

    from bertops.models.pretrained import describe_model_source, resolve_model_source

    cfg = config.finetune
    refuse_preservation(cfg, "NER")
    tokenizer_pad = {}

    def build(id2label: dict[int, str]):
        return AutoModelForTokenClassification.from_pretrained(
            resolve_model_source(cfg.model),
            num_labels=len(id2label),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            hidden_dropout_prob=cfg.dropout,
            attn_implementation="sdpa",
        )

    def score(model, frame: pd.DataFrame, device: torch.device, precision: str) -> float:
        if "pad" not in tokenizer_pad:
            from bertops.models.pretrained import load_tokenizer

            tokenizer_pad["pad"] = load_tokenizer(cfg.model).pad_token_id
        id2label = model.config.id2label
        predicted = predict_tags(
            model, frame, id2label, tokenizer_pad["pad"], config.evaluate.batch_size, device, precision
        )
        return entity_scores(frame["tags"].map(list).tolist(), predicted)["f1"]

    return TrainingSpec(
        stage="finetune",
        section=cfg,
        build=build,
        tokenizer=cfg.model,
        parent=describe_model_source(cfg.model),
        out_dir=root / config.paths.models / config.ingest.dataset,
        lineage={"task": "ner"},
        targets=lambda frame: frame["labels"].map(list).tolist(),
        collate=collate_tokens,
        score=score,
        metric="entity_f1",
    )
