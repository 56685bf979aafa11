"""Ray Train adapter: runs the very same `finetune` loop in N workers (TorchTrainer + DDP).

Ray connects to `RAY_ADDRESS` when set (a cluster), else starts a local instance. Data is read by
each worker from the prepared files under the workspace root given to it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from bertops.config import Config, ConfigError
from bertops.training.loop import TrainResult


MAX_FAILURES = 3


def _worker(loop_config: dict) -> None:
    """What each Ray worker runs: the plain loop of the stage (rank 0 writes the model and metrics)."""
    from bertops.config import config_from_dict

    config, root = config_from_dict(loop_config["config"]), Path(loop_config["root"])
    _announce(root / config.paths.reports / loop_config["stage"] / "workers")
    if loop_config["stage"] == "pretrain":
        from bertops.pretraining.run import pretrain

        pretrain(config, root)
    else:
        from bertops.training.loop import finetune

        finetune(config, root)


def _announce(folder: Path) -> None:
    """Where this worker runs (rank, pid, node): for operators, and for the fault tests."""
    import socket

    import ray
    import ray.train

    context = ray.train.get_context()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{context.get_world_rank()}.json").write_text(json.dumps({
        "rank": context.get_world_rank(), "pid": os.getpid(), "host": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id()}))


def run_on_ray(config: Config, root: Path, stage: str, num_workers: int, device: str) -> None:
    """Run `stage` ("finetune" or "pretrain") on `num_workers` Ray Train workers (TorchTrainer + DDP).
    Ray connects to RAY_ADDRESS when set, else starts locally and is shut down afterwards."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, include_dashboard=False,
                 logging_level="ERROR", configure_logging=True)
    try:
        resources = ray.cluster_resources()
        use_gpu = device == "cuda" or (device == "auto" and resources.get("GPU", 0) > 0)
        # Ray would wait forever for resources the cluster does not have: say so instead.
        if resources.get("CPU", 0) < num_workers or (use_gpu and resources.get("GPU", 0) < num_workers):
            raise ConfigError(
                f"{stage}.num_workers={num_workers} needs {num_workers} CPUs"
                f"{' and GPUs' if use_gpu else ''}; the Ray cluster has {resources.get('CPU', 0):.0f} CPUs and "
                f"{resources.get('GPU', 0):.0f} GPUs. Lower num_workers or add nodes.")
        # On CPU each worker gets an equal share of threads (2 cores, 2 workers -> 1 thread each).
        cpus = max(1, int(resources.get("CPU", 1)) // num_workers)
        trainer = TorchTrainer(
            train_loop_per_worker=_worker,
            train_loop_config={"config": config.to_dict(), "root": str(root.resolve()), "stage": stage},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
            # A worker that dies is restarted by Ray (the whole group, up to MAX_FAILURES times); the
            # loop then resumes from its last checkpoint in the workspace.
            run_config=RunConfig(name=f"{stage}-{config.ingest.dataset if stage == 'finetune' else config.pretrain.name}",
                                 storage_path=str((root / config.paths.models / "ray").resolve()),
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES)),
        )
        (root / config.paths.reports / stage / "metrics.json").unlink(missing_ok=True)  # no stale figures
        trainer.fit()
    finally:
        if started_here:
            ray.shutdown()


def pretrain_on_ray(config: Config, root: Path = Path(".")) -> dict:
    run_on_ray(config, root, "pretrain", config.pretrain.num_workers, config.pretrain.device)
    return json.loads((root / config.paths.reports / "pretrain" / "metrics.json").read_text())


def finetune_on_ray(config: Config, root: Path = Path(".")) -> TrainResult:
    run_on_ray(config, root, "finetune", config.finetune.num_workers, config.finetune.device)
    # Rank 0 saved the model and its metrics into the workspace (a shared filesystem on a
    # cluster); Ray Train v2 keeps reported metrics only with checkpoints, so read them back.
    metrics_path = root / config.paths.reports / "finetune" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    return TrainResult(model_dir=str(root / config.paths.models / config.ingest.dataset),
                       **{k: metrics[k] for k in ("steps", "best_step", "best_validation_accuracy", "train_seconds",
                                                  "tokens_per_second", "padding_share", "device", "precision",
                                                  "world_size")})
