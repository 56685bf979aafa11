"""The optimizer and learning-rate schedule every training loop uses (AdamW, linear warmup/decay,
optionally layer-wise learning-rate decay)."""

from __future__ import annotations

import re

import torch

_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def layer_depth(name: str, layers: int) -> int:
    """Where a parameter sits, counted from the input: 0 for the embeddings, i + 1 for encoder layer
    i, layers + 1 for everything above the encoder (pooler, task heads)."""
    if name.startswith("embeddings.") or ".embeddings." in name:
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else layers + 1


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device, layer_decay: float = 1.0
) -> torch.optim.AdamW:
    """AdamW without decay on biases/LayerNorm; the fused kernel (one pass over all params) when available.

    `layer_decay` < 1 is layer-wise learning-rate decay (as in ELECTRA and BEiT fine-tuning): the
    head keeps `lr`, encoder layer i gets lr x layer_decay^(layers - i), the embeddings the lowest,
    so the pretrained lower layers move least."""
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    layers = max((int(m.group(1)) + 1 for name, _ in named if (m := _LAYER.search(name))), default=0)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        decays = not (param.ndim < 2 or "LayerNorm" in name)
        depth = layer_depth(name, layers) if layer_decay != 1.0 else 0
        group = groups.setdefault(
            (depth, decays),
            {
                "params": [],
                "weight_decay": weight_decay if decays else 0.0,
                "lr": lr * layer_decay ** (layers + 1 - depth) if layer_decay != 1.0 else lr,
            },
        )
        group["params"].append(param)
    ordered = [groups[key] for key in sorted(groups, key=lambda key: (key[0], not key[1]))]
    try:
        return torch.optim.AdamW(ordered, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # older torch or an unsupported device
        return torch.optim.AdamW(ordered, lr=lr, foreach=True)


def optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm: float) -> None:
    """Unscale (fp16), clip the global gradient norm, step, clear gradients, advance the schedule."""
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
