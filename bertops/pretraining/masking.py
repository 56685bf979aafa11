"""BERT's masked-language-model corruption, drawn afresh for every batch (dynamic masking).

Of the non-special tokens, `mask_prob` (15%) are chosen for prediction; of those, 80% become
[MASK], 10% a random token, 10% stay unchanged. With whole-word masking, a word's WordPiece
pieces (continuations start with "##") are chosen together. Only the chosen positions carry a
label, so the loss (and the vocabulary projection) runs at those positions alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskedBatch:
    input_ids: np.ndarray  # (B, T) after corruption
    positions: np.ndarray  # (M, 2) [row, column] of every prediction
    labels: np.ndarray  # (M,) the original token ids at those positions


def mask_tokens(
    input_ids: np.ndarray,
    special: np.ndarray,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    mask_prob: float = 0.15,
    word_start: np.ndarray | None = None,
) -> MaskedBatch:
    """input_ids (B, T) int; special (B, T) bool: [CLS], [SEP], [PAD] are never chosen.
    word_start (B, T) bool, for whole-word masking: True where a new word begins."""
    ids = np.array(input_ids, copy=True)
    candidates = ~special
    if word_start is None:
        chosen = candidates & (rng.random(ids.shape) < mask_prob)
    else:
        # Choose words, then spread each choice over the word's pieces.
        starts = candidates & word_start
        pick = starts & (rng.random(ids.shape) < mask_prob)
        word_id = np.cumsum(starts, axis=1)  # which word each position belongs to
        picked_words = np.where(pick, word_id, 0)
        chosen = np.zeros_like(candidates)
        for row in range(ids.shape[0]):
            words = np.unique(picked_words[row][picked_words[row] > 0])
            chosen[row] = candidates[row] & np.isin(word_id[row], words)
    # Every sequence predicts at least one token (a batch with no label has no loss).
    empty = ~chosen.any(axis=1) & candidates.any(axis=1)
    for empty_row in np.flatnonzero(empty):
        chosen[empty_row, rng.choice(np.flatnonzero(candidates[empty_row]))] = True
    positions = np.argwhere(chosen)
    labels = ids[chosen]
    action = rng.random(len(labels))
    rows, cols = positions[:, 0], positions[:, 1]
    to_mask = action < 0.8
    to_random = (action >= 0.8) & (action < 0.9)
    ids[rows[to_mask], cols[to_mask]] = mask_id
    ids[rows[to_random], cols[to_random]] = rng.integers(0, vocab_size, int(to_random.sum()))
    return MaskedBatch(ids, positions, labels)
