"""The training loop every task and distillation share. One process, CPU or GPU.

A plain function of (config, workspace, `TrainingSpec`): the task says what to train, the loop
how. Ray only wraps it (see `ray_adapter`): when a torch.distributed process group is up (Ray
Train sets one), the loop shards batches by rank and wraps the model in DDP; everything else is
the same code.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertops.config import Config, ConfigError
from bertops.data.batching import Batch, bucketed_batches, collate, shard
from bertops.training.checkpoint import Checkpoint, restore_rng, rng_state
from bertops.training.optim import build_optimizer, linear_warmup_decay, optimizer_step
from bertops.training.setup import autocast, training_setup


@dataclass
class TrainResult:
    model_dir: str
    steps: int
    best_step: int
    best_validation_accuracy: float
    train_seconds: float
    tokens_per_second: float  # real (non-pad) tokens per second, all workers together
    padding_share: float  # pad tokens / all tokens fed to the model
    device: str
    precision: str
    world_size: int
    resumed_from_step: int = 0  # > 0: this run continued a killed one from its checkpoint
    validation_metric: str = "accuracy"  # what best_validation_accuracy measures (entity F1 for NER)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_report(cls, metrics_path: Path, model_dir: Path) -> TrainResult:
        """The result of a run whose rank 0 wrote `metrics.json` (a Ray run: Train v2 keeps
        reported metrics only with checkpoints, so they are read back from the workspace)."""
        metrics = json.loads(metrics_path.read_text())
        names = (
            "steps",
            "best_step",
            "best_validation_accuracy",
            "train_seconds",
            "tokens_per_second",
            "padding_share",
            "device",
            "precision",
            "world_size",
        )
        return cls(model_dir=str(model_dir), **{k: metrics[k] for k in names})


@dataclass
class _Best:
    """The best validation score so far, the step it came at and a CPU copy of the weights then.
    Saved in the training-state checkpoint as the dict {"accuracy", "step", "state"}."""

    accuracy: float = -1.0
    step: int = 0
    state: dict[str, torch.Tensor] | None = None

    def to_checkpoint(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "step": self.step, "state": self.state}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> _Best:
        return cls(accuracy=saved["accuracy"], step=saved["step"], state=saved["state"])


@dataclass
class TrainingSpec:
    """What a task (or distillation) trains with the shared loop: the model, its targets and batching,
    its loss and its validation score (higher is better; it selects the checkpoint kept)."""

    stage: str  # "finetune" | "distill": checkpoint and report names
    section: Any  # its config section (epochs, batch size, lr, ...)
    build: Callable[[dict[int, str]], torch.nn.Module]  # id2label -> the model to train (on CPU)
    tokenizer: str  # the model whose tokenizer the prepared corpus must match
    out_dir: Path
    parent: str  # lineage: what the weights started from
    # (model being trained, batch, row indices of the batch in train) -> loss; None = the model's own loss
    loss: Callable[[torch.nn.Module, Batch, np.ndarray], torch.Tensor] | None = None
    # once, before training: (model, train sequences, train targets, device, precision) -> None
    prepare: Callable[[torch.nn.Module, list[list[int]], list, torch.device, str], None] | None = None
    lineage: dict = field(default_factory=dict)  # extra lineage fields (e.g. the teacher)
    # Score the model before the first step too, so that a start already worth keeping (a
    # linear-probed head) is kept when fine-tuning only makes it worse.
    evaluate_start: bool = False
    # (model, validation frame, device, precision) -> the score that selects the checkpoint kept
    score: Callable[[torch.nn.Module, Any, torch.device, str], float] | None = None
    metric: str = "accuracy"  # what `score` measures (higher is better)
    targets: Callable[[Any], list] | None = None  # frame -> one target per row; None = frame["label"]
    collate: Callable[..., Batch] | None = None  # (sequences, targets, pad_id, sep_id) -> Batch


def train_loop(
    config: Config, root: Path, run: TrainingSpec, on_evaluate: Callable[[dict[str, Any]], None] | None = None
) -> TrainResult:
    """The shared loop: bucketed batches, AdamW + warmup/decay, the spec's score on the validation
    rows, resumable checkpoints, the best weights saved with their lineage.

    `on_evaluate` receives each validation row ({step, epoch, validation_accuracy, elapsed_s}, plus
    `share`: step / the run's total steps) as it is scored (rank 0): a hyperparameter search reports it
    to its scheduler, which may stop the run there."""
    from transformers.utils import logging as hf_logging

    from bertops.data.prepare import load_prepared
    from bertops.models.pretrained import load_tokenizer

    cfg = run.section
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    # -- 1. where and how: device, precision, distributed rank ---------------------------------
    distributed, rank, world, device, precision = training_setup(cfg)

    # -- 2. data ---------------------------------------------------------------------------------
    frames, id2label, meta = load_prepared(config, root)
    tokenizer = load_tokenizer(run.tokenizer)
    if meta["tokenizer"] != run.tokenizer:
        raise ConfigError(
            f"the prepared corpus was tokenized for {meta['tokenizer']!r} but {run.stage} needs {run.tokenizer!r}'s "
            "tokenizer; re-run `bertops prepare` with finetune.model set to the same model"
        )
    train_ids = frames["train"]["input_ids"].map(list).tolist()
    targets = run.targets or (lambda frame: frame["label"].tolist())
    train_labels = targets(frames["train"])
    val_ids = frames["validation"]["input_ids"].map(list).tolist()
    batcher = run.collate or collate
    if run.score is None:
        raise ConfigError(f"the {run.stage} training spec has no validation score; a task's training_spec must set one")
    score = run.score
    if not train_ids or not val_ids:
        raise ConfigError(
            f"the prepared corpus has {len(train_ids)} train and {len(val_ids)} validation rows; "
            "both must be non-empty (check prepare.max_train_rows and prepare.validation_fraction)"
        )
    lengths = np.array([len(s) for s in train_ids])
    pad_id, sep_id = tokenizer.pad_token_id, tokenizer.sep_token_id

    # -- 3. model, optimizer, schedule -------------------------------------------------------------
    model = run.build(id2label).to(device)
    if run.prepare is not None:
        run.prepare(model, train_ids, train_labels, device, precision)
    train_model = model
    if distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # layer-wise lr decay is a fine-tuning setting (the distillation section has none)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device, getattr(cfg, "layer_decay", 1.0))
    per_epoch = len(train_ids) // (cfg.batch_size * world) if world > 1 else math.ceil(len(train_ids) / cfg.batch_size)
    total = per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, per_epoch * cfg.epochs)
    scheduler = linear_warmup_decay(optimizer, int(cfg.warmup_ratio * total), total)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # -- 4. train, evaluating every `eval_every` steps and at each epoch end ----------------------
    history: list[dict[str, Any]] = []
    best = _Best()
    real_tokens = fed_tokens = 0
    step, started = 0, time.perf_counter()
    # A run killed mid-training resumes from its last checkpoint when nothing it depends on changed.
    name = config.ingest.dataset if run.stage == "finetune" else f"{config.ingest.dataset}-{run.stage}"
    checkpoint = Checkpoint(
        root / config.paths.models / ".checkpoints" / name, Checkpoint.key(cfg, meta.get("prepared_hash"), world)
    )
    start_epoch, skip_batches, resumed_from, resumed_tokens = 0, 0, 0, 0
    saved = checkpoint.load() if cfg.checkpoint_every else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        step, start_epoch, skip_batches = saved["step"], saved["epoch"], saved["batch_in_epoch"]
        best, history = _Best.from_checkpoint(saved["best"]), saved["history"]
        real_tokens, fed_tokens = saved["real_tokens"], saved["fed_tokens"]
        restore_rng(saved["rng"])
        resumed_from, resumed_tokens = step, real_tokens
        if rank == 0:
            print(f"{run.stage}: resuming from the checkpoint at step {step} ({checkpoint.path})", flush=True)
    progress = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        progress = tqdm(total=total, initial=step, desc=run.stage, unit="step", mininterval=2.0, dynamic_ncols=True)

    eval_seconds = 0.0

    def evaluate_now(epoch: int) -> None:
        nonlocal eval_seconds
        eval_started = time.perf_counter()
        accuracy = float(score(model, frames["validation"], device, precision))
        history.append(
            {
                "step": step,
                "epoch": epoch,
                "validation_accuracy": round(accuracy, 4),
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
        )
        if accuracy > best.accuracy:
            # Keep the best weights in memory (CPU copy); written once at the end.
            best.accuracy = accuracy
            best.step = step
            best.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        eval_seconds += time.perf_counter() - eval_started
        if on_evaluate is not None and rank == 0:
            on_evaluate(dict(history[-1], share=step / total))  # + how far through its schedule the run is

    if run.evaluate_start and step == 0:
        evaluate_now(0)
    model.train()
    running_loss, running_n = 0.0, 0
    for epoch in range(start_epoch, cfg.epochs):
        batches = shard(bucketed_batches(lengths, cfg.batch_size, cfg.bucket_size, seed=cfg.seed + epoch), rank, world)
        for position, index in enumerate(batches):
            if epoch == start_epoch and position < skip_batches:
                continue  # done before the checkpoint (the batch order is a function of the seed)
            batch = batcher([train_ids[i] for i in index], [train_labels[i] for i in index], pad_id, sep_id).to(device)
            with autocast(device, precision):
                if run.loss is None:
                    loss = train_model(**batch.inputs(), labels=batch.labels).loss
                else:
                    loss = run.loss(train_model, batch, index)
            scaler.scale(loss).backward()
            optimizer_step(model, optimizer, scheduler, scaler, cfg.max_grad_norm)
            step += 1
            real_tokens += batch.real_tokens
            fed_tokens += batch.input_ids.numel()
            running_loss += float(loss.detach())
            running_n += 1
            if progress is not None:
                progress.update(1)
                if step % 20 == 0:
                    progress.set_postfix(loss=f"{running_loss / running_n:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if step % 50 == 0:
                history.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        "train_loss": round(running_loss / running_n, 5),
                        "lr": scheduler.get_last_lr()[0],
                        "elapsed_s": round(time.perf_counter() - started, 1),
                    }
                )
                running_loss, running_n = 0.0, 0
            if cfg.eval_every and step % cfg.eval_every == 0:
                evaluate_now(epoch)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total and rank == 0:
                checkpoint.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "step": step,
                        "epoch": epoch,
                        "batch_in_epoch": position + 1,
                        "best": best.to_checkpoint(),
                        "history": history,
                        "real_tokens": real_tokens,
                        "fed_tokens": fed_tokens,
                        "rng": rng_state(),
                    }
                )
            if step >= total:
                break
        if not history or history[-1].get("step") != step or "validation_accuracy" not in history[-1]:
            evaluate_now(epoch)
        if step >= total:
            break
    seconds = time.perf_counter() - started
    if progress is not None:
        progress.close()

    # -- 5. save the best checkpoint with everything needed to rebuild and trace it ---------------
    if best.state is None:  # only when no validation score ever beat -1 (e.g. every score was NaN)
        raise TypeError(f"{run.stage}: no validation score was ever kept, so there are no best weights to save")
    model.load_state_dict(best.state)
    # Training throughput: evaluation time is not training time.
    tokens_per_second = (real_tokens - resumed_tokens) * world / max(seconds - eval_seconds, 1e-9)
    result = TrainResult(
        model_dir=str(run.out_dir),
        steps=step,
        best_step=best.step,
        best_validation_accuracy=round(best.accuracy, 4),
        train_seconds=round(seconds, 1),
        tokens_per_second=round(tokens_per_second, 1),
        padding_share=round(1 - real_tokens / max(fed_tokens, 1), 4),
        device=str(device),
        precision=precision,
        world_size=world,
        resumed_from_step=resumed_from,
        history=history,
        validation_metric=run.metric,
    )
    if rank == 0:
        save_model(model, tokenizer, result, config, meta, root, run)
        checkpoint.clear()  # the model is saved: nothing to resume
    return result


def save_model(
    model, tokenizer, result: TrainResult, config: Config, meta: dict, root: Path, run: TrainingSpec
) -> None:
    """Write HF-format weights (safetensors), tokenizer, label map and lineage atomically."""
    from bertops.atomic import replace_dir, staging_dir
    from bertops.lineage import build_lineage, file_sha256, folder_fingerprint

    out_dir = Path(result.model_dir)
    tmp = staging_dir(out_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    metrics = {k: v for k, v in asdict(result).items() if k not in ("history", "model_dir")}
    raw_path = str(config.paths.raw / config.ingest.dataset)
    lineage = build_lineage(
        config.ingest.dataset,
        meta["data_hash"],
        raw_path,
        config.to_dict(),
        metrics,
        root,
        parent=run.parent,
        validation_report=str(config.paths.reports / "validate" / "report.json"),
    )
    lineage["prepared_hash"] = meta.get("prepared_hash")
    # what prepare changed in the corpus (rows dropped or cleaned), as the prepared corpus records it
    lineage["prepare_changes"] = {
        k: meta[k] for k in ("eval_overlap_dropped_from_train", "rows_with_control_characters_stripped") if k in meta
    }
    lineage.update(stage=run.stage, **run.lineage)
    # The fingerprint that evaluate -> gate -> package carry, so an approval cannot be reused
    # for other weights.
    lineage["model_sha256"] = file_sha256(tmp / "model.safetensors")
    # Every file loading reads (config.json and the model's own code run with trust_remote_code, the
    # tokenizer changes every input): verify_weights checks them all before a stage trusts the folder.
    lineage["files_sha256"] = folder_fingerprint(tmp)
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
    replace_dir(tmp, out_dir)

    reports = root / config.paths.reports / run.stage
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    # Two plot files (DVC plots want one complete series per file).
    for name, fields in (
        ("train_loss.csv", ["step", "train_loss", "lr"]),
        ("validation.csv", ["step", "validation_accuracy"]),
    ):
        with open(reports / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(row for row in result.history if fields[1] in row)
