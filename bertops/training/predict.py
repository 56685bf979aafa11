"""Batched inference for sequence classifiers, length-sorted (little padding), in input order."""

from __future__ import annotations

import numpy as np
import torch

from bertops.data.batching import bucketed_batches, collate
from bertops.training.setup import autocast


@torch.no_grad()
def predict_logits(
    model,
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    sep_id: int | None = None,
) -> np.ndarray:
    """Logits (N, num_labels) in input order; batches are length-sorted to avoid padding."""
    was_training = model.training
    model.eval()
    lengths = [len(s) for s in sequences]
    out = np.zeros((len(sequences), model.config.num_labels), dtype=np.float32)
    for index in bucketed_batches(lengths, batch_size, 1, seed=0, shuffle=False):
        batch = collate([sequences[i] for i in index], None, pad_id, sep_id).to(device)
        with autocast(device, precision):
            logits = model(**batch.inputs()).logits
        out[index] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


def accuracy_score(pad_id: int, sep_id: int | None, batch_size: int):
    """A `TrainingSpec.score` for sequence classifiers: accuracy of the arg-max label on a prepared
    frame (input_ids, label)."""

    def score(model, frame, device: torch.device, precision: str) -> float:
        sequences = frame["input_ids"].map(list).tolist()
        logits = predict_logits(model, sequences, pad_id, batch_size, device, precision, sep_id)
        return float((logits.argmax(-1) == np.asarray(frame["label"])).mean())

    return score
