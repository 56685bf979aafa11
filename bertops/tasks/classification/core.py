"""Sequence classification as pure functions the endpoint shares with evaluation: logits ->
probabilities -> the answer for one input. No bertops imports: `bertops package` copies this file
into the Bento as `bertops_classification_core.py`."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def answer(probabilities: np.ndarray, labels: list[str]) -> dict:
    """The arg-max label and each label's probability (6 decimals) for one input."""
    return {
        "label": labels[int(np.argmax(probabilities))],
        "probabilities": {name: round(float(p), 6) for name, p in zip(labels, probabilities)},
    }
