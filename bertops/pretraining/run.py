"""`pretrain`: prepare a pretraining corpus and pretrain BERT on it (masked LM + NSP).

prepare_pretraining: raw WikiText files -> documents -> sentences -> tokenizer (trained WordPiece
  or reused) -> NSP examples for the training and held-out text -> data/pretrain/<name>/.
pretrain: a fresh preset-shaped BERT (or an existing encoder, continued) trained with dynamic
  masking, gradient accumulation, warmup + linear decay, clipping, checkpoints every N steps
  (a killed run resumes); held-out MLM perplexity/accuracy and NSP accuracy at the end;
  -> models/pretrained/<name>/ (Hugging Face BertForPreTraining + tokenizer + lineage), and
  reports/pretrain/{metrics.json, log.csv}.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
import torch

from bertops.config import Config, ConfigError
from bertops.data.sources import DataSourceError, first_search_path
from bertops.pretraining.corpus import nsp_examples, read_documents, tokenize_documents
from bertops.pretraining.model import (
    OBJECTIVE_INPUTS,
    PRESETS,
    PretrainingObjective,
    build_pretraining_model,
    flops_per_token,
    pretraining_losses,
)


def corpus_files(config: Config, root: Path) -> tuple[Path, Path]:
    """(training text, held-out text): a local folder from search_paths, else the hub dataset."""
    _, train, heldout = _corpus(config, root)
    return train, heldout


def _corpus(config: Config, root: Path) -> tuple[str, Path, Path]:
    """(the source as params.yaml names it, training text, held-out text). The name is the search
    path as written ($VARIABLES unexpanded) or the hub id: the prepared corpus's meta is a DVC
    output, the same in every clone."""
    cfg = config.pretrain
    found = first_search_path(
        cfg.search_paths, root, lambda f: (f / cfg.train_file).is_file() and (f / cfg.heldout_file).is_file()
    )
    if found:
        return found[0], found[1] / cfg.train_file, found[1] / cfg.heldout_file
    if cfg.hub_id:
        try:
            import datasets

            cache = root / config.paths.raw / f"pretrain-{cfg.name}"
            cache.mkdir(parents=True, exist_ok=True)
            out = []
            for split, name in (("validation", cfg.train_file), ("test", cfg.heldout_file)):
                rows = datasets.load_dataset(cfg.hub_id, cfg.hub_config, split=split)["text"]
                (cache / name).write_text("".join(rows), encoding="utf-8")
                out.append(cache / name)
            return f"hf://{cfg.hub_id}/{cfg.hub_config or ''}".rstrip("/"), out[0], out[1]
        except Exception as exc:  # offline, unknown id: one clear message
            hub_error = f"; the hub dataset {cfg.hub_id!r} could not be loaded ({type(exc).__name__})"
    else:
        hub_error = ""
    raise DataSourceError(
        f"pretraining corpus: no folder in pretrain.search_paths {cfg.search_paths} holds {cfg.train_file} and "
        f"{cfg.heldout_file}{hub_error}. Set BERTOPS_DATASETS to a folder holding wikitext-2-raw/, or "
        "-s pretrain.search_paths=[/path/to/folder]"
    )


def build_tokenizer(config: Config, train_text: Path, out_dir: Path):
    """WordPiece trained on the training text (uncased, BERT's special tokens), or a reused one."""
    from transformers import PreTrainedTokenizerFast

    cfg = config.pretrain
    if cfg.tokenizer != "train":
        from bertops.models.pretrained import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    else:
        from tokenizers import BertWordPieceTokenizer

        trainer = BertWordPieceTokenizer(lowercase=True, strip_accents=True, clean_text=True)
        trainer.train(
            [str(train_text)],
            vocab_size=cfg.vocab_size,
            min_frequency=2,
            show_progress=False,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        trainer.save_model(str(out_dir))  # vocab.txt, for tools that want BERT's plain format
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=trainer._tokenizer,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    tokenizer.model_max_length = cfg.max_length
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def recipe(config: Config) -> dict:
    """The params the prepared corpus depends on: when any differs, it is built again."""
    return config.pretrain.model_dump(
        mode="json",
        include={"train_file", "heldout_file", "tokenizer", "vocab_size", "max_length", "short_seq_prob", "seed"},
    )


def ensure_prepared(config: Config, root: Path) -> dict:
    """The prepared corpus's meta, (re)built when missing or made with other params or another source."""
    meta_file = root / config.paths.pretrain_data / config.pretrain.name / "meta.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("recipe") == recipe(config):
            from bertops.lineage import files_sha256

            train_text, heldout_text = corpus_files(config, root)
            if files_sha256([train_text, heldout_text]) == meta["source_sha256"]:
                return meta
    return prepare_pretraining(config, root)


def prepare_pretraining(config: Config, root: Path = Path(".")) -> dict:
    from bertops.atomic import replace_dir, staging_dir
    from bertops.lineage import files_sha256

    cfg = config.pretrain
    source, train_text, heldout_text = _corpus(config, root)
    out_dir = root / config.paths.pretrain_data / cfg.name
    tmp = staging_dir(out_dir)
    tokenizer = build_tokenizer(config, train_text, tmp / "tokenizer")

    def encode(sentences: list[str]) -> list[list[int]]:
        return tokenizer(sentences, add_special_tokens=False)["input_ids"]

    probe = encode(["the first sentence of the corpus ."])[0]
    if not probe or all(t == tokenizer.unk_token_id for t in probe):
        raise ConfigError(
            f"the pretraining tokenizer ({cfg.tokenizer}) maps plain English to [UNK]; check pretrain.tokenizer"
        )
    stats = {}
    for split, path, seed in (("train", train_text, cfg.seed), ("heldout", heldout_text, cfg.seed + 1)):
        documents = tokenize_documents(read_documents(path), encode)
        if len(documents) < 2:
            raise DataSourceError(
                f"{path}: {len(documents)} document(s) found, but next-sentence prediction needs at "
                "least 2 (articles start at ' = Title = ' lines); use a larger corpus"
            )
        examples = nsp_examples(documents, cfg.max_length, cfg.short_seq_prob, seed)
        pd.DataFrame(
            {"a": [e.a for e in examples], "b": [e.b for e in examples], "is_next": [e.is_next for e in examples]}
        ).to_parquet(tmp / f"{split}.parquet", index=False)
        unk = sum(t == tokenizer.unk_token_id for e in examples for t in e.a + e.b)
        stats[split] = {
            "documents": len(documents),
            "examples": len(examples),
            "unk_share": round(unk / max(1, sum(len(e.a) + len(e.b) for e in examples)), 4),
            "tokens": int(sum(len(e.a) + len(e.b) + 3 for e in examples)),
            "is_next_share": round(float(np.mean([e.is_next for e in examples])), 3),
        }
    meta = {
        "name": cfg.name,
        "source": {"train": f"{source}/{cfg.train_file}", "heldout": f"{source}/{cfg.heldout_file}"},
        "source_sha256": files_sha256([train_text, heldout_text]),
        "recipe": recipe(config),
        "tokenizer": cfg.tokenizer,
        "vocab_size": tokenizer.vocab_size,
        "max_length": cfg.max_length,
        "splits": stats,
    }
    meta["prepared_hash"] = files_sha256(
        [tmp / "train.parquet", tmp / "heldout.parquet", tmp / "tokenizer" / "vocab.txt"]
        if (tmp / "tokenizer" / "vocab.txt").is_file()
        else [tmp / "train.parquet", tmp / "heldout.parquet"]
    )
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    replace_dir(tmp, out_dir)
    return meta


class PretrainingBatch(TypedDict):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    is_next: torch.Tensor
    real_tokens: int  # non-pad tokens


class Batches:
    """Length-bucketed NSP batches with fresh masking every draw."""

    def __init__(self, frame: pd.DataFrame, tokenizer, batch_size: int, mask_prob: float, whole_word: bool, seed: int):
        self.a, self.b = frame["a"].map(list).tolist(), frame["b"].map(list).tolist()
        self.is_next = frame["is_next"].to_numpy()
        self.tok, self.batch_size, self.mask_prob, self.whole_word = tokenizer, batch_size, mask_prob, whole_word
        self.rng = np.random.default_rng(seed)
        self.continuation = None
        if whole_word:
            vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
            self.continuation = np.array([t.startswith("##") for t in vocab])

    def collate(self, index: np.ndarray, rng: np.random.Generator) -> PretrainingBatch:
        from bertops.pretraining.masking import mask_tokens

        tok = self.tok
        rows = [[tok.cls_token_id, *self.a[i], tok.sep_token_id, *self.b[i], tok.sep_token_id] for i in index]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), tok.pad_token_id, dtype=np.int64)
        types = np.zeros_like(ids)
        for r, i in enumerate(index):
            ids[r, : len(rows[r])] = rows[r]
            types[r, len(self.a[i]) + 2 : len(rows[r])] = 1
        attention = (ids != tok.pad_token_id).astype(np.int64)
        special = np.isin(ids, [tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
        word_start = (
            None if self.continuation is None else ~self.continuation[np.clip(ids, 0, len(self.continuation) - 1)]
        )
        masked = mask_tokens(ids, special, rng, tok.mask_token_id, tok.vocab_size, self.mask_prob, word_start)
        return {
            "input_ids": torch.from_numpy(masked.input_ids),
            "attention_mask": torch.from_numpy(attention),
            "token_type_ids": torch.from_numpy(types),
            "positions": torch.from_numpy(masked.positions),
            "labels": torch.from_numpy(masked.labels),
            "is_next": torch.from_numpy(self.is_next[index]),
            "real_tokens": int(attention.sum()),
        }

    def epoch(self, epoch: int):
        from bertops.data.batching import bucketed_batches

        lengths = [len(a) + len(b) + 3 for a, b in zip(self.a, self.b)]
        return bucketed_batches(lengths, self.batch_size, 50, seed=epoch, shuffle=True)


@torch.no_grad()
def heldout_metrics(model, batches: Batches, device: torch.device, seed: int = 0) -> dict:
    """MLM perplexity and accuracy (a fixed masking draw) and NSP accuracy on the held-out examples."""
    from bertops.data.batching import bucketed_batches

    model.eval()
    rng = np.random.default_rng(seed)
    loss_sum = mlm_correct = mlm_total = nsp_correct = nsp_total = 0.0
    lengths = [len(a) + len(b) + 3 for a, b in zip(batches.a, batches.b)]
    for index in bucketed_batches(lengths, batches.batch_size, 1, seed=0, shuffle=False):
        batch = batches.collate(np.asarray(index), rng)
        out = pretraining_losses(model, *(batch[k].to(device) for k in OBJECTIVE_INPUTS))
        loss_sum += float(out["mlm_loss"]) * out["mlm_total"]
        mlm_correct += float(out["mlm_correct"])
        mlm_total += out["mlm_total"]
        nsp_correct += float(out["nsp_correct"])
        nsp_total += out["nsp_total"]
    model.train()
    return {
        "heldout_mlm_perplexity": round(math.exp(loss_sum / max(mlm_total, 1)), 3),
        "heldout_mlm_accuracy": round(mlm_correct / max(mlm_total, 1), 4),
        "heldout_nsp_accuracy": round(nsp_correct / max(nsp_total, 1), 4),
        "heldout_examples": int(nsp_total),
    }


def pretrain(config: Config, root: Path = Path(".")) -> dict:
    """Pretrain on data/pretrain/<name>/ (prepared first if missing); returns the final metrics."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from bertops.data.batching import shard
    from bertops.training.checkpoint import Checkpoint, restore_rng, rng_state
    from bertops.training.optim import build_optimizer, linear_warmup_decay, optimizer_step
    from bertops.training.setup import autocast, training_setup

    cfg = config.pretrain
    hf_logging.set_verbosity_error()
    # When a torch.distributed group is up (Ray Train sets one), shard the batches by rank and wrap
    # the objective in DDP; rank 0 alone logs, checkpoints and saves. Same code otherwise.
    distributed, rank, world, device, precision = training_setup(cfg)
    data_dir = root / config.paths.pretrain_data / cfg.name
    if distributed:  # the driver prepared it (see run_pretrain)
        if not (data_dir / "meta.json").is_file():
            raise ConfigError(
                f"{data_dir} holds no prepared pretraining corpus; run `bertops pretrain --prepare-only` "
                "before training on Ray workers"
            )
        meta = json.loads((data_dir / "meta.json").read_text())
    else:
        meta = ensure_prepared(config, root)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")

    if cfg.model in PRESETS:
        model = build_pretraining_model(cfg.model, None, tokenizer.vocab_size, cfg.max_length)
    else:
        if cfg.tokenizer == "train":
            raise ConfigError(
                f"pretrain.model={cfg.model!r} continues an existing encoder: it needs that encoder's "
                "tokenizer, so set pretrain.tokenizer to the same model (not 'train')"
            )
        from bertops.models.pretrained import resolve_model_source

        model = build_pretraining_model(None, resolve_model_source(cfg.model), tokenizer.vocab_size, cfg.max_length)
        if cfg.max_length > model.config.max_position_embeddings:
            raise ConfigError(
                f"pretrain.max_length={cfg.max_length} exceeds {cfg.model}'s "
                f"{model.config.max_position_embeddings} positions; lower pretrain.max_length"
            )
    model.to(device).train()
    objective: torch.nn.Module = PretrainingObjective(model)
    if distributed:
        objective = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    train = Batches(
        pd.read_parquet(data_dir / "train.parquet"),
        tokenizer,
        cfg.batch_size,
        cfg.mask_prob,
        cfg.whole_word_masking,
        cfg.seed,
    )
    heldout = Batches(
        pd.read_parquet(data_dir / "heldout.parquet"), tokenizer, 64, cfg.mask_prob, cfg.whole_word_masking, cfg.seed
    )
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scheduler = linear_warmup_decay(optimizer, int(cfg.warmup_ratio * cfg.steps), cfg.steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    checkpoint = Checkpoint(
        root / config.paths.models / ".checkpoints" / f"pretrain-{cfg.name}",
        Checkpoint.key(cfg, meta["prepared_hash"], world),
    )
    per_token = flops_per_token(model)
    peak = _peak_flops(device)

    step, epoch, log, resumed_from = 0, 0, [], 0
    rng = np.random.default_rng([cfg.seed, rank])  # each rank draws its own masks
    saved = checkpoint.load() if cfg.checkpoint_every else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step, epoch, log = saved["step"], saved["epoch"], saved["log"]
        rng.bit_generator.state = saved["mask_rng"]
        restore_rng(saved["rng"])
        resumed_from = step
        if rank == 0:
            print(f"pretrain: resuming from the checkpoint at step {step}", flush=True)

    window = {
        "loss": 0.0,
        "mlm_correct": 0.0,
        "mlm_total": 0,
        "nsp_correct": 0.0,
        "nsp_total": 0,
        "tokens": 0,
        "batches": 0,
        "started": time.perf_counter(),
    }
    started = time.perf_counter()
    batches = iter(shard(train.epoch(epoch), rank, world))
    progress = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        progress = tqdm(total=cfg.steps, initial=step, desc="pretrain", unit="step", mininterval=2.0)
    while step < cfg.steps:
        for _ in range(cfg.grad_accum):
            index = next(batches, None)
            if index is None:  # a new epoch: new batch order (and, as always, new masks)
                epoch += 1
                batches = iter(shard(train.epoch(epoch), rank, world))
                index = next(batches)
            batch = train.collate(np.asarray(index), rng)
            with autocast(device, precision):
                out = objective(*(batch[k].to(device) for k in OBJECTIVE_INPUTS))
            scaler.scale(out["loss"] / cfg.grad_accum).backward()
            window["loss"] += float(out["loss"].detach())
            window["mlm_correct"] += float(out["mlm_correct"])
            window["mlm_total"] += out["mlm_total"]
            window["nsp_correct"] += float(out["nsp_correct"])
            window["nsp_total"] += out["nsp_total"]
            window["tokens"] += batch["real_tokens"]
            window["batches"] += 1
        optimizer_step(model, optimizer, scheduler, scaler, cfg.max_grad_norm)
        step += 1
        if progress is not None:
            progress.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            seconds = time.perf_counter() - window["started"]
            tokens_per_second = window["tokens"] * world / max(seconds, 1e-9)  # all workers (equal shards)
            log.append(
                {
                    "step": step,
                    "loss": round(window["loss"] / window["batches"], 4),
                    "mlm_accuracy": round(window["mlm_correct"] / max(window["mlm_total"], 1), 4),
                    "nsp_accuracy": round(window["nsp_correct"] / max(window["nsp_total"], 1), 4),
                    "tokens_per_second": round(tokens_per_second, 1),
                    "mfu": round(tokens_per_second * per_token / peak, 4) if peak else None,
                    "lr": scheduler.get_last_lr()[0],
                }
            )
            window = {k: 0 for k in window} | {"started": time.perf_counter()}
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps and rank == 0:
            checkpoint.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "log": log,
                    "mask_rng": rng.bit_generator.state,
                    "rng": rng_state(),
                }
            )
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - started
    metrics = {
        "steps": step,
        "resumed_from_step": resumed_from,
        "train_seconds": round(seconds, 1),
        "examples": len(train.a),
        "preset": cfg.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "precision": precision,
        "world_size": world,
        "last": log[-1] if log else None,
    }
    if rank == 0:
        metrics.update(heldout_metrics(model, heldout, device))
        save_pretrained(model, tokenizer, config, meta, metrics, log, root)
        checkpoint.clear()
    return metrics


def _peak_flops(device: torch.device) -> float | None:
    """Peak dense FLOP/s for the MFU estimate: BERTOPS_PEAK_TFLOPS, else a table for known GPUs."""
    if os.environ.get("BERTOPS_PEAK_TFLOPS"):
        return float(os.environ["BERTOPS_PEAK_TFLOPS"]) * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12), ("A10", 125e12)):
            if key in name:
                return tflops  # bf16 dense
    return None


def save_pretrained(model, tokenizer, config: Config, meta: dict, metrics: dict, log: list[dict], root: Path) -> None:
    from bertops.atomic import replace_dir, staging_dir
    from bertops.lineage import file_sha256, git_commit

    cfg = config.pretrain
    out_dir = root / config.paths.models / "pretrained" / cfg.name
    tmp = staging_dir(out_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    lineage = {
        "kind": "pretrained",
        "name": cfg.name,
        "corpus": meta["source"],
        "corpus_sha256": meta["source_sha256"],
        "prepared_hash": meta["prepared_hash"],
        "params": cfg.model_dump(mode="json"),
        "git_commit": git_commit(root),
        "metrics": metrics,
        "parent_model": None if cfg.model in PRESETS else cfg.model,
        "model_sha256": file_sha256(tmp / "model.safetensors"),
    }
    (tmp / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
    replace_dir(tmp, out_dir)
    reports = root / config.paths.reports / "pretrain"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if log:
        with open(reports / "log.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(log[0]))
            writer.writeheader()
            writer.writerows(log)


def run_pretrain(config: Config, root: Path = Path(".")) -> dict:
    """`bertops pretrain`: in this process, or on `pretrain.num_workers` Ray Train workers (the
    driver prepares the corpus first and ships it to the workers)."""
    if config.pretrain.num_workers == 0:
        return pretrain(config, root)
    from bertops.training.ray_adapter import run_on_ray

    ensure_prepared(config, root)
    cfg = config.pretrain
    run_on_ray(
        config,
        root,
        LOOP,
        stage="pretrain",
        data_key="pretrain_data",
        data_name=cfg.name,
        num_workers=cfg.num_workers,
        device=cfg.device,
    )
    return json.loads((root / config.paths.reports / "pretrain" / "metrics.json").read_text())


LOOP = "bertops.pretraining.run:pretrain"  # what each Ray worker runs
DISABLED_NOTE = "pretraining is disabled (pretrain.enabled=false); fine-tuning starts from finetune.model\n"


def pretrain_stage(config: Config, root: Path = Path(".")) -> dict:
    """The pipeline's pretrain stage: pretrain when `pretrain.enabled`, else leave a note.

    DVC wants a stage's outputs to exist, so a disabled stage writes a small note in each output
    folder that does not exist yet; a model pretrained earlier by hand is left alone."""
    if config.pretrain.enabled:
        return run_pretrain(config, root)
    for folder in (
        root / config.paths.pretrain_data / config.pretrain.name,
        root / config.paths.models / "pretrained" / config.pretrain.name,
    ):
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "DISABLED").write_text(DISABLED_NOTE)
    return {"enabled": False}
