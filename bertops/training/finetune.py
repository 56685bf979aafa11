"""`finetune`: the stage. The task says what to train (`Task.training_spec`); the shared loop
trains it, in this process (`finetune.num_workers: 0`) or on Ray Train workers (N >= 1)."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Config
from bertops.training.loop import TrainResult, train_loop

# What each Ray worker runs: this module's in-process stage, by reference (the adapter imports no stage).
LOOP = "bertops.training.finetune:finetune_in_process"


def finetune(config: Config, root: Path = Path(".")) -> TrainResult:
    """Fine-tune `finetune.model` for the task on the prepared corpus; save the best checkpoint + lineage."""
    if config.finetune.num_workers == 0:
        return finetune_in_process(config, root)
    from bertops.training.ray_adapter import run_on_ray

    cfg = config.finetune
    run_on_ray(
        config,
        root,
        LOOP,
        stage="finetune",
        data_key="prepared",
        data_name=config.ingest.dataset,
        num_workers=cfg.num_workers,
        device=cfg.device,
    )
    return TrainResult.from_report(
        root / config.paths.reports / "finetune" / "metrics.json", root / config.paths.models / config.ingest.dataset
    )


def finetune_in_process(config: Config, root: Path = Path(".")) -> TrainResult:
    """The loop in this process (a Ray worker runs exactly this)."""
    from bertops.tasks import get_task

    return train_loop(config, root, get_task(config.ingest.task).training_spec(config, root))
