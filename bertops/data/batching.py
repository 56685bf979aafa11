"""Length-bucketed batching and dynamic padding, so training spends compute on tokens, not pads.

Texts are shuffled, cut into pools of `bucket_size` batches, each pool sorted by length and cut
into batches, and the batches shuffled again: batches hold similar lengths (little padding) yet
the order stays random from epoch to epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def bucketed_batches(
    lengths: list[int] | np.ndarray, batch_size: int, bucket_size: int, seed: int, shuffle: bool = True
) -> list[np.ndarray]:
    """Index batches; every index appears exactly once. `shuffle=False` gives length-sorted order."""
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    pool = batch_size * bucket_size
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def shard(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """This worker's share of the batches (equal counts, so all ranks step together)."""
    per_rank = len(batches) // world_size
    return batches[rank * per_rank : (rank + 1) * per_rank] if world_size > 1 else batches


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64, padded with pad_id
    attention_mask: torch.Tensor  # (B, T) int64, 1 = real token
    labels: torch.Tensor | None  # (B,) int64
    token_type_ids: torch.Tensor | None = None  # (B, T): 0 = first segment, 1 = second (sentence pairs)

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            None if self.labels is None else self.labels.to(device, non_blocking=True),
            None if self.token_type_ids is None else self.token_type_ids.to(device, non_blocking=True),
        )

    def inputs(self) -> dict[str, torch.Tensor]:
        """The model's keyword inputs."""
        feeds = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            feeds["token_type_ids"] = self.token_type_ids
        return feeds

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(sequences: list[list[int]], labels: list[int] | None, pad_id: int, sep_id: int | None = None) -> Batch:
    """Pad to the longest sequence in this batch (dynamic padding). With `sep_id`, segment ids are
    derived from the ids: 1 after the first [SEP] ([CLS] a [SEP] | b [SEP]), so pairs need no extra column."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    types = None
    if sep_id is not None:
        seps = (ids == sep_id) & (mask == 1)
        # segments before and including the first [SEP] are 0; everything after it (incl. pads: masked) 1
        types = ((seps.cumsum(dim=1) - seps.long()) > 0).long() * mask
    return Batch(ids, mask, None if labels is None else torch.as_tensor(labels, dtype=torch.long), types)
