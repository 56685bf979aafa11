"""BERT for pretraining (MLM + NSP) with the vocabulary projection run at masked positions only.

The weights are Hugging Face's `BertForPreTraining` (so a checkpoint loads anywhere, and its
encoder is what `finetune` starts from); the forward pass here gathers the hidden states of the
masked positions before the MLM head: with 15% masking, that is ~7x less work in the 30k-wide
decoder than projecting every token.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import torch
from torch import nn


class PresetShape(TypedDict):
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int


# Shapes from Turc et al. 2019 ("Well-Read Students Learn Better", the 24 compact BERTs) and the
# BERT paper (base). Heads = hidden / 64; intermediate = 4 x hidden.
PRESETS: dict[str, PresetShape] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4},
    "small": {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8},
    "medium": {"num_hidden_layers": 8, "hidden_size": 512, "num_attention_heads": 8},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12},
}


def build_pretraining_model(preset: str | None, source: str | None, vocab_size: int, max_length: int):
    """A fresh BertForPreTraining of a preset shape, or one continuing `source` (an encoder folder)."""
    from transformers import BertConfig, BertForPreTraining

    if source is not None:
        return BertForPreTraining.from_pretrained(source, attn_implementation="sdpa")
    assert preset is not None  # callers pass a preset whenever they pass no source
    shape = PRESETS[preset]
    # BertConfig's dataclass-generated signature hides the **kwargs that PreTrainedConfig accepts at runtime.
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        intermediate_size=4 * shape["hidden_size"],
        max_position_embeddings=max(512, max_length),
        attn_implementation="sdpa",
        **shape,
    )
    return BertForPreTraining(config)  # decoder weights tied to the word embeddings, as in BERT


# The batch tensors `pretraining_losses` (and `PretrainingObjective.forward`) take after the model, in order.
ObjectiveInput = Literal["input_ids", "attention_mask", "token_type_ids", "positions", "labels", "is_next"]
OBJECTIVE_INPUTS: tuple[ObjectiveInput, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "positions",
    "labels",
    "is_next",
)


class PretrainingLosses(TypedDict):
    loss: torch.Tensor  # MLM + NSP, with its graph (the one to backpropagate)
    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    mlm_correct: torch.Tensor
    mlm_total: int  # masked positions predicted
    nsp_correct: torch.Tensor
    nsp_total: int  # sentence pairs


class PretrainingObjective(nn.Module):
    """MLM + NSP losses as one module, so DistributedDataParallel sees (and all-reduces) the whole
    forward pass; `model` is the wrapped BertForPreTraining."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, positions, labels, is_next):
        return pretraining_losses(self.model, input_ids, attention_mask, token_type_ids, positions, labels, is_next)


def pretraining_losses(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
    positions: torch.Tensor,
    labels: torch.Tensor,
    is_next: torch.Tensor,
) -> PretrainingLosses:
    """MLM loss/accuracy at `positions` (M, 2) and NSP loss/accuracy; `loss` = their sum."""
    bert, heads = model.bert, model.cls
    sequence, pooled = bert(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=False
    )[:2]
    masked = sequence[positions[:, 0], positions[:, 1]]  # (M, H): only what is predicted
    mlm_logits = heads.predictions(masked).float()  # (M, V)
    nsp_logits = heads.seq_relationship(pooled).float()  # (B, 2)
    mlm_loss = nn.functional.cross_entropy(mlm_logits, labels)
    nsp_loss = nn.functional.cross_entropy(nsp_logits, is_next)
    return {
        "loss": mlm_loss + nsp_loss,
        "mlm_loss": mlm_loss.detach(),
        "nsp_loss": nsp_loss.detach(),
        "mlm_correct": (mlm_logits.argmax(-1) == labels).sum().detach(),
        "mlm_total": labels.numel(),
        "nsp_correct": (nsp_logits.argmax(-1) == is_next).sum().detach(),
        "nsp_total": is_next.numel(),
    }


def flops_per_token(model) -> float:
    """Training FLOPs per token, the standard estimate 6 x (non-embedding parameters) plus attention
    (Kaplan et al. 2020): 6N + 12 * layers * hidden * sequence is added by the caller per length."""
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return 6.0 * (sum(p.numel() for p in model.parameters()) - embedding)
