"""Fine-tuning that keeps the sentence space: `finetune.embedding_preservation` > 0 adds, to the
task's loss, the cosine distance between the model's mean-pooled sentence embedding and the one
the parent encoder (frozen, a copy of where fine-tuning started) gives the same batch:

    loss = task loss + weight * mean(1 - cos(pool(model), pool(parent)))

This distils the parent's sentence embeddings into the fine-tuned encoder (as multilingual
sentence-embedding distillation does), so the served model's own `/embed` stays close to the
general-purpose space while its head learns the task. The cost: one extra forward pass of the
parent per batch (no backward). Measured for a few weights in bench/embedding_preservation.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bertops.data.batching import Batch


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def preserving_loss(parent_source: str, weight: float) -> Callable[[torch.nn.Module, Batch, object], torch.Tensor]:
    """(model, batch, rows) -> the model's own loss + `weight` x the embedding-preservation term.
    The parent is loaded once, on the device of the first batch, frozen."""
    parent: list[torch.nn.Module] = []

    def loss(model: torch.nn.Module, batch: Batch, _rows) -> torch.Tensor:
        if not parent:
            from transformers import AutoModel

            parent.append(
                AutoModel.from_pretrained(parent_source).to(batch.input_ids.device).eval().requires_grad_(False)
            )
        out = model(**batch.inputs(), labels=batch.labels, output_hidden_states=True)
        pooled = mean_pool(out.hidden_states[-1], batch.attention_mask)
        with torch.no_grad():
            target = mean_pool(parent[0](**batch.inputs()).last_hidden_state, batch.attention_mask)
        distance = 1.0 - torch.nn.functional.cosine_similarity(pooled.float(), target.float(), dim=-1)
        return out.loss + weight * distance.mean()

    return loss


def refuse_preservation(section, task: str) -> None:
    """Tasks whose loss does not take the term refuse the setting instead of ignoring it."""
    if section.embedding_preservation > 0:
        from bertops.errors import ConfigError

        raise ConfigError(
            f"finetune.embedding_preservation={section.embedding_preservation} is for classification; the {task} "
            "task does not add the term. Set it to 0 (serve.embedding_model=parent keeps /embed general-purpose)"
        )
