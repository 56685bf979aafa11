"""Pick where `finetune` runs: this process (num_workers=0) or Ray Train workers (num_workers>=1)."""
from __future__ import annotations

from pathlib import Path

from bertops.config import Config
from bertops.training.loop import TrainResult, finetune


def train(config: Config, root: Path = Path(".")) -> TrainResult:
    if config.finetune.num_workers == 0:
        return finetune(config, root)
    from bertops.training.ray_adapter import finetune_on_ray

    return finetune_on_ray(config, root)
