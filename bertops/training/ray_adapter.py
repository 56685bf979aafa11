"""Ray Train adapter: runs a plain training loop, given by reference, in N workers (TorchTrainer + DDP).

It only wraps: the stage (finetune, distill, pretrain) passes its in-process loop as an importable
"module:function" and this module imports no stage.

Ray connects to `RAY_ADDRESS` when set (a cluster), else starts a local instance.

Data does not assume a shared filesystem: the driver packs the prepared corpus (a few MB of
parquet + tokenizer) into Ray's object store; each worker unpacks it once into a node-local
scratch folder (keyed by its content hash) and reads it from there, taking its shard of the
batches by rank. Models, reports and resumable checkpoints go to the workspace root, the run's
storage (on a multi-node cluster: a shared volume, as Ray's own `storage_path` requires).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from bertops.config import Config, ConfigError
from bertops.errors import ClusterUnreachable

MAX_FAILURES = 3


def resolve_loop(reference: str):
    """ "package.module:function" -> the function (each worker imports the loop it is given)."""
    import importlib

    module, _, name = reference.partition(":")
    if not module or not name:
        raise ConfigError(f"loop reference {reference!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def _worker(loop_config: dict) -> None:
    """What each Ray worker runs: the plain loop it was given (rank 0 writes the model and metrics)."""
    from bertops.config import config_from_dict

    tree, root = loop_config["config"], Path(loop_config["root"])
    local = unpack_data(loop_config["data"])
    tree["paths"][loop_config["data_key"]] = str(local)  # read the corpus from this node's copy
    config = config_from_dict(tree)
    _announce(root / config.paths.reports / loop_config["stage"] / "workers", local)
    resolve_loop(loop_config["loop"])(config, root)


def pack_data(folder: Path) -> dict:
    """A prepared-corpus folder as {relative path: bytes} plus its content hash (for the object store)."""
    import hashlib

    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    if not files:
        raise ConfigError(f"{folder} holds no prepared corpus to send to the Ray workers; run the prepare step first")
    digest = hashlib.sha256()
    for name, blob in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(blob).digest())
    return {"name": folder.name, "sha256": digest.hexdigest(), "files": files}


def unpack_data(bundle) -> Path:
    """Materialise a packed corpus on this node (once per content hash); returns the parent folder
    to use as the stage's data path (the corpus is <returned>/<name>/)."""
    import tempfile

    import ray

    if isinstance(bundle, ray.ObjectRef):
        bundle = ray.get(bundle)
    base = Path(tempfile.gettempdir()) / "bertops-ray-data" / bundle["sha256"][:16]
    done = base / ".complete"
    if not done.is_file():
        from filelock import FileLock

        base.mkdir(parents=True, exist_ok=True)
        with FileLock(str(base) + ".lock"):  # two workers on one node: one unpacks
            if not done.is_file():
                for name, blob in bundle["files"].items():
                    path = base / bundle["name"] / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(blob)
                done.write_text(bundle["sha256"])
    return base


def _announce(folder: Path, data: Path) -> None:
    """Where this worker runs (rank, pid, node, data copy): for operators, and for the fault tests."""
    import socket

    import ray
    import ray.train

    context = ray.train.get_context()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{context.get_world_rank()}.json").write_text(
        json.dumps(
            {
                "rank": context.get_world_rank(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "data": str(data),
            }
        )
    )


def connect() -> None:
    """ray.init: the cluster at RAY_ADDRESS when set, else a new local instance (never a stray one)."""
    import ray

    address = os.environ.get("RAY_ADDRESS", "").strip()
    os.environ.pop("RAY_ADDRESS", None)  # Ray would read an empty value as an address
    if address and address != "auto":
        # ray.init retries an unreachable GCS for minutes: probe the port first.
        import socket

        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port or 10001)), timeout=5).close()
        except (OSError, ValueError) as exc:
            os.environ["RAY_ADDRESS"] = address
            raise ClusterUnreachable(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address!r} ({exc}); check the address "
                "(host:port of the head node, or ray://host:10001) and that the cluster is up, or "
                "unset RAY_ADDRESS to run on a local Ray"
            ) from None
    try:
        ray.init(
            address=address or "local",
            log_to_driver=False,
            include_dashboard=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
    except Exception as exc:  # ConnectionError, ValueError (bad format), RuntimeError, ...
        if not address:
            raise
        raise ClusterUnreachable(
            f"cannot connect to the Ray cluster at RAY_ADDRESS={address!r} ({type(exc).__name__}: "
            f"{str(exc)[:200]}); check the address (host:port of the head's GCS, or ray://host:10001) "
            "and that the cluster is up, or unset RAY_ADDRESS to run on a local Ray"
        ) from None
    finally:
        if address:
            os.environ["RAY_ADDRESS"] = address


def run_on_ray(
    config: Config, root: Path, loop: str, stage: str, data_key: str, data_name: str, num_workers: int, device: str
) -> None:
    """Run `loop` ("module:function" of (config, root), e.g. the finetune stage's in-process loop) on
    `num_workers` Ray Train workers (TorchTrainer + DDP). The corpus at config.paths.<data_key>/<data_name>
    travels through the object store; `stage` names the run and its reports folder. Ray connects to
    RAY_ADDRESS when set, else starts locally and is shut down afterwards."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started_here = not ray.is_initialized()
    if started_here:
        connect()
    try:
        resources = ray.cluster_resources()
        use_gpu = device == "cuda" or (device == "auto" and resources.get("GPU", 0) > 0)
        # Ray would wait forever for resources the cluster does not have: say so instead.
        if resources.get("CPU", 0) < num_workers or (use_gpu and resources.get("GPU", 0) < num_workers):
            raise ConfigError(
                f"{stage}.num_workers={num_workers} needs {num_workers} CPUs"
                f"{' and GPUs' if use_gpu else ''}; the Ray cluster has {resources.get('CPU', 0):.0f} CPUs and "
                f"{resources.get('GPU', 0):.0f} GPUs. Lower num_workers or add nodes."
            )
        # On CPU each worker gets an equal share of threads (2 cores, 2 workers -> 1 thread each).
        cpus = max(1, int(resources.get("CPU", 1)) // num_workers)
        resolve_loop(loop)  # a wrong reference fails here, not in every worker
        data = ray.put(pack_data(root / getattr(config.paths, data_key) / data_name))
        trainer = TorchTrainer(
            train_loop_per_worker=_worker,
            train_loop_config={
                "config": config.to_dict(),
                "root": str(root.resolve()),
                "stage": stage,
                "loop": loop,
                "data_key": data_key,
                "data": data,
            },
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
            # A worker that dies is restarted by Ray (the whole group, up to MAX_FAILURES times); the
            # loop then resumes from its last checkpoint in the workspace.
            run_config=RunConfig(
                name=f"{stage}-{data_name}",
                storage_path=str((root / config.paths.models / "ray").resolve()),
                failure_config=FailureConfig(max_failures=MAX_FAILURES),
            ),
        )
        (root / config.paths.reports / stage / "metrics.json").unlink(missing_ok=True)  # no stale figures
        trainer.fit()
    finally:
        if started_here:
            ray.shutdown()
