"""Classification metrics as pure numpy functions: accuracy, per-class P/R/F1, macro-F1,
confusion matrix and expected calibration error (ECE).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_labels: int) -> np.ndarray:
    """(num_labels, num_labels): rows are true labels, columns predictions."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def per_class(matrix: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall, F1 and support per class; 0.0 where undefined (no predictions/support)."""
    rows = []
    for k in range(matrix.shape[0]):
        tp = matrix[k, k]
        predicted, actual = matrix[:, k].sum(), matrix[k, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(actual)})
    return rows


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al., 2017): sum_b |B|/N * |acc(B) - conf(B)|."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin b holds confidences in (edges[b], edges[b+1]]; confidence is always > 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def classification_metrics(logits: np.ndarray, y_true: np.ndarray, labels: list[str], ece_bins: int) -> dict:
    """Everything `evaluate` reports, from logits and true label ids."""
    y_true = np.asarray(y_true)
    probs = softmax(logits)
    y_pred = probs.argmax(axis=-1)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    classes = per_class(matrix)
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(np.mean([c["f1"] for c in classes])),
        "ece": expected_calibration_error(probs, y_true, ece_bins),
        "per_class": {name: c for name, c in zip(labels, classes)},
        "confusion_matrix": matrix.tolist(),
        "labels": labels,
        "examples": int(len(y_true)),
    }
