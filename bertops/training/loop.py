"""`finetune`: the sequence-classification training loop. One process, CPU or GPU.

A plain function of (config, workspace): Ray only wraps it (see `ray_adapter`). When a
torch.distributed process group is up (Ray Train sets one), the loop shards batches by rank and
wraps the model in DDP; everything else is the same code.
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


@dataclass
class TrainResult:
    model_dir: str
    steps: int
    best_step: int
    best_validation_accuracy: float
    train_seconds: float
    tokens_per_second: float      # real (non-pad) tokens per second, all workers together
    padding_share: float          # pad tokens / all tokens fed to the model
    device: str
    precision: str
    world_size: int
    resumed_from_step: int = 0    # > 0: this run continued a killed one from its checkpoint
    validation_metric: str = "accuracy"   # what best_validation_accuracy measures (entity F1 for NER)
    history: list[dict[str, Any]] = field(default_factory=list)


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


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW without decay on biases/LayerNorm; the fused kernel (one pass over all params) when available."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # older torch or an unsupported device
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


def optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm: float) -> None:
    """Unscale (fp16), clip the global gradient norm, step, clear gradients, advance the schedule."""
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def predict_logits(model, sequences: list[list[int]], pad_id: int, batch_size: int, device: torch.device,
                   precision: str = "fp32", sep_id: int | None = None) -> np.ndarray:
    """Logits (N, num_labels) in input order; batches are length-sorted to avoid padding."""
    was_training = model.training
    model.eval()
    lengths = [len(s) for s in sequences]
    out = np.zeros((len(sequences), model.config.num_labels), dtype=np.float32)
    for index in bucketed_batches(lengths, batch_size, 1, seed=0, shuffle=False):
        batch = collate([sequences[i] for i in index], None, pad_id, sep_id).to(device)
        with autocast(device, precision):
            logits = model(**batch.inputs()).logits
        out[index] = logits.float().cpu().numpy()
    model.train(was_training)
    return out


@dataclass
class ClassifierRun:
    """What differs between fine-tuning and distillation; the training loop is the same."""
    stage: str                                   # "finetune" | "distill": checkpoint and report names
    section: Any                                 # its config section (epochs, batch size, lr, ...)
    build: Callable[[dict[int, str]], torch.nn.Module]   # id2label -> the model to train (on CPU)
    tokenizer: str                               # the model whose tokenizer the prepared corpus must match
    out_dir: Path
    parent: str                                  # lineage: what the weights started from
    # (model being trained, batch, row indices of the batch in train) -> loss; None = the model's own loss
    loss: Callable[[torch.nn.Module, Batch, np.ndarray], torch.Tensor] | None = None
    # once, before training: (model, train sequences, train targets, device, precision) -> None
    prepare: Callable[[torch.nn.Module, list[list[int]], list, torch.device, str], None] | None = None
    lineage: dict = field(default_factory=dict)  # extra lineage fields (e.g. the teacher)
    # Score the model before the first step too, so that a start already worth keeping (a
    # linear-probed head) is kept when fine-tuning only makes it worse.
    evaluate_start: bool = False
    # Other tasks (token classification): per-row targets, their batching, the validation score.
    targets: Callable[[Any], list] | None = None           # frame -> one target per row; None = frame["label"]
    collate: Callable[..., Batch] | None = None             # (sequences, targets, pad_id, sep_id) -> Batch
    score: Callable[[torch.nn.Module, Any, torch.device, str], float] | None = None  # (model, frame, ...) -> score
    metric: str = "accuracy"                                # what `score` measures (higher is better)


def finetune(config: Config, root: Path = Path(".")) -> TrainResult:
    """Fine-tune `finetune.model` on the prepared corpus; save the best checkpoint + lineage."""
    from bertops.models.classifier import build_classifier
    from bertops.models.pretrained import describe_model_source

    if config.ingest.task == "ner":
        from bertops.tasks.token_classification import finetune_ner

        return finetune_ner(config, root)
    if config.ingest.task == "qa":
        from bertops.tasks.question_answering import finetune_qa

        return finetune_qa(config, root)
    cfg = config.finetune
    lineage: dict = {}

    def probe_head(model, train_ids, train_labels, device, precision) -> None:
        """finetune.pooling=siamese: start from a head fit to the frozen encoder (linear probe)."""
        from bertops.models.classifier import fit_pair_head
        from bertops.models.pretrained import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
        lineage["linear_probe"] = fit_pair_head(model, train_ids, train_labels, tokenizer.pad_token_id,
                                                tokenizer.sep_token_id, device, config.evaluate.batch_size)

    return train_classifier(config, root, ClassifierRun(
        stage="finetune", section=cfg, tokenizer=cfg.model, parent=describe_model_source(cfg.model),
        build=lambda id2label: build_classifier(cfg.model, cfg.pooling, id2label, cfg.dropout),
        out_dir=root / config.paths.models / config.ingest.dataset,
        prepare=probe_head if cfg.pooling == "siamese" else None, evaluate_start=cfg.pooling == "siamese",
        lineage=lineage))


def train_classifier(config: Config, root: Path, run: ClassifierRun) -> TrainResult:
    """The sequence-classification loop: bucketed batches, AdamW + warmup/decay, evaluation on the
    validation rows, checkpoints, the best weights saved with their lineage."""
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
    val_labels = np.asarray(frames["validation"]["label"]) if run.score is None else None
    batcher = run.collate or collate
    if not train_ids or not val_ids:
        raise ConfigError(f"the prepared corpus has {len(train_ids)} train and {len(val_ids)} validation rows; "
                          "both must be non-empty (check prepare.max_train_rows and prepare.validation_fraction)")
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
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device)
    per_epoch = len(train_ids) // (cfg.batch_size * world) if world > 1 else math.ceil(len(train_ids) / cfg.batch_size)
    total = per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, per_epoch * cfg.epochs)
    scheduler = linear_warmup_decay(optimizer, int(cfg.warmup_ratio * total), total)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # -- 4. train, evaluating every `eval_every` steps and at each epoch end ----------------------
    history: list[dict[str, Any]] = []
    best = {"accuracy": -1.0, "step": 0, "state": None}
    real_tokens = fed_tokens = 0
    step, started = 0, time.perf_counter()
    # A run killed mid-training resumes from its last checkpoint when nothing it depends on changed.
    name = config.ingest.dataset if run.stage == "finetune" else f"{config.ingest.dataset}-{run.stage}"
    checkpoint = Checkpoint(root / config.paths.models / ".checkpoints" / name,
                            Checkpoint.key(cfg, meta.get("prepared_hash"), world))
    start_epoch, skip_batches, resumed_from, resumed_tokens = 0, 0, 0, 0
    saved = checkpoint.load() if cfg.checkpoint_every else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        step, start_epoch, skip_batches = saved["step"], saved["epoch"], saved["batch_in_epoch"]
        best, history = saved["best"], saved["history"]
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
        if run.score is None:
            logits = predict_logits(model, val_ids, pad_id, config.evaluate.batch_size, device, precision, sep_id)
            accuracy = float((logits.argmax(-1) == val_labels).mean())
        else:
            accuracy = float(run.score(model, frames["validation"], device, precision))
        history.append({"step": step, "epoch": epoch, "validation_accuracy": round(accuracy, 4),
                        "elapsed_s": round(time.perf_counter() - started, 1)})
        if accuracy > best["accuracy"]:
            # Keep the best weights in memory (CPU copy); written once at the end.
            best.update(accuracy=accuracy, step=step,
                        state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        eval_seconds += time.perf_counter() - eval_started

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
                history.append({"step": step, "epoch": epoch, "train_loss": round(running_loss / running_n, 5),
                                "lr": scheduler.get_last_lr()[0],
                                "elapsed_s": round(time.perf_counter() - started, 1)})
                running_loss, running_n = 0.0, 0
            if cfg.eval_every and step % cfg.eval_every == 0:
                evaluate_now(epoch)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total and rank == 0:
                checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                                 "epoch": epoch, "batch_in_epoch": position + 1, "best": best, "history": history,
                                 "real_tokens": real_tokens, "fed_tokens": fed_tokens, "rng": rng_state()})
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
    model.load_state_dict(best["state"])
    # Training throughput: evaluation time is not training time.
    tokens_per_second = (real_tokens - resumed_tokens) * world / max(seconds - eval_seconds, 1e-9)
    result = TrainResult(
        model_dir=str(run.out_dir),
        steps=step, best_step=best["step"], best_validation_accuracy=round(best["accuracy"], 4),
        train_seconds=round(seconds, 1), tokens_per_second=round(tokens_per_second, 1),
        padding_share=round(1 - real_tokens / max(fed_tokens, 1), 4), device=str(device),
        precision=precision, world_size=world, resumed_from_step=resumed_from, history=history,
        validation_metric=run.metric,
    )
    if rank == 0:
        save_model(model, tokenizer, result, config, meta, root, run)
        checkpoint.clear()  # the model is saved: nothing to resume
    return result


class Checkpoint:
    """The training state at a step, in one file written atomically, bound to what produced it:
    a checkpoint from another corpus, other params or another world size is ignored."""

    def __init__(self, folder: Path, key: dict):
        import hashlib

        self.path = folder / "state.pt"
        self.fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    @staticmethod
    def key(section, prepared_hash: str | None, world: int) -> dict:
        """What a resumable state depends on: the data, the section's params (minus cosmetic ones), the world size."""
        params = section.model_dump(mode="json", exclude={"progress", "num_threads", "checkpoint_every", "log_every"})
        return {"prepared": prepared_hash, "params": params, "world": world}

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # a torn or foreign file: start over rather than fail
            return None
        return state if state.get("fingerprint") == self.fingerprint else None

    def save(self, state: dict) -> None:
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({**state, "fingerprint": self.fingerprint}, tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state() -> dict:
    import random

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    import random

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_model(model, tokenizer, result: TrainResult, config: Config, meta: dict, root: Path,
               run: ClassifierRun) -> None:
    """Write HF-format weights (safetensors), tokenizer, label map and lineage atomically."""
    from bertops.atomic import replace_dir, staging_dir
    from bertops.lineage import build_lineage, file_sha256

    out_dir = Path(result.model_dir)
    tmp = staging_dir(out_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    metrics = {k: v for k, v in asdict(result).items() if k not in ("history", "model_dir")}
    raw_path = str(config.paths.raw / config.ingest.dataset)
    lineage = build_lineage(config.ingest.dataset, meta["data_hash"], raw_path, config.to_dict(), metrics, root,
                            parent=run.parent,
                            validation_report=str(config.paths.reports / "validate" / "report.json"))
    lineage["prepared_hash"] = meta.get("prepared_hash")
    lineage.update(stage=run.stage, **run.lineage)
    # The fingerprint that evaluate -> gate -> package carry, so an approval cannot be reused
    # for other weights.
    lineage["model_sha256"] = file_sha256(tmp / "model.safetensors")
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
    replace_dir(tmp, out_dir)

    reports = root / config.paths.reports / run.stage
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    # Two plot files (DVC plots want one complete series per file).
    for name, fields in (("train_loss.csv", ["step", "train_loss", "lr"]),
                         ("validation.csv", ["step", "validation_accuracy"])):
        with open(reports / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(row for row in result.history if fields[1] in row)
