"""Slices of the eval split (by token count, by keyword) and metrics per slice: pure functions."""

from __future__ import annotations

import re

import numpy as np

from bertops.config import SliceConfig
from bertops.evaluation.metrics import confusion_matrix, per_class


def keyword_pattern(keywords: list[str]) -> re.Pattern:
    """Whole-word, case-insensitive match of any keyword ("n't" matches in "does n't")."""
    alternatives = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<![\w']){'(?:' + alternatives + ')'}(?![\w'])", re.IGNORECASE)


def slice_masks(texts: list[str], token_counts: np.ndarray, slices: dict[str, SliceConfig]) -> dict[str, np.ndarray]:
    """name -> boolean mask over the examples meeting every condition of that slice."""
    token_counts = np.asarray(token_counts)
    masks = {}
    for name, rule in slices.items():
        mask = np.ones(len(texts), dtype=bool)
        if rule.min_tokens is not None:
            mask &= token_counts >= rule.min_tokens
        if rule.max_tokens is not None:
            mask &= token_counts <= rule.max_tokens
        if rule.keywords:
            pattern = keyword_pattern(rule.keywords)
            mask &= np.array([bool(pattern.search(t)) for t in texts], dtype=bool)
        masks[name] = mask
    return masks


def slice_metrics(y_true: np.ndarray, y_pred: np.ndarray, masks: dict[str, np.ndarray], num_labels: int) -> dict:
    """name -> examples, accuracy and macro-F1 (over the labels present in the slice); an empty
    slice reports 0 examples and null metrics."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out: dict[str, dict[str, int | float | None]] = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        if n == 0:
            out[name] = {"examples": 0, "accuracy": None, "macro_f1": None}
            continue
        matrix = confusion_matrix(y_true[mask], y_pred[mask], num_labels)
        present = [c for c in per_class(matrix) if c["support"]]
        out[name] = {
            "examples": n,
            "accuracy": float((y_true[mask] == y_pred[mask]).mean()),
            "macro_f1": float(np.mean([c["f1"] for c in present])),
        }
    return out
