"""Where and how a training loop runs: device, precision (autocast), distributed rank, threads, seed."""

from __future__ import annotations

import numpy as np
import torch

from bertops.config import ConfigError


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("finetune.device=cuda but no CUDA device is visible; use finetune.device=auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_precision(requested: str, device: torch.device) -> str:
    """bf16/fp16 autocast only on GPUs: CPUs without AVX-512-bf16 run bf16 matmuls ~100x slower."""
    if device.type == "cpu":
        if requested in ("bf16", "fp16"):
            raise ConfigError(
                f"finetune.precision={requested} on CPU: mixed precision is for GPUs (bf16 matmuls are "
                "hundreds of times slower on CPUs without bf16 units); use finetune.precision=auto or fp32"
            )
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def training_setup(cfg) -> tuple[bool, int, int, torch.device, str]:
    """(distributed, rank, world size, device, precision) for a training section; sets threads
    and seeds. Distributed when a torch.distributed group is up (Ray Train sets one)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    device = pick_device(cfg.device)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", torch.cuda.current_device())
    precision = pick_precision(cfg.precision, device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    return distributed, rank, world, device, precision


def set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
