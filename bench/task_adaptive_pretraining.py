"""Task-adaptive pretraining (Gururangan et al. 2020, "Don't Stop Pretraining"): does continuing the
encoder's masked-LM training on the task's own unlabelled training text, before fine-tuning, raise
the fine-tuned model's accuracy on the validation slice?

One run compares, on the same prepared split and the same fine-tuning settings (params.yaml's),
fine-tuning from the encoder as shipped against fine-tuning from that encoder after N masked-LM
steps on the train split's texts (one arm per `--steps` value), each with several seeds. Only
train texts are read for the masked-LM steps; the validation slice scores the fine-tuned models;
the eval split is never read (the workspace may hold an empty eval.parquet).

    python bench/task_adaptive_pretraining.py --workspace WS --steps 1000,4000 --seeds 42,43,44 \
        --parallel 9 --out bench/out/tapt.json

The masked-LM phase uses bertops' own pieces (`bertops.pretraining.masking.mask_tokens`, the
`BertForPreTraining` weights of `build_pretraining_model`, the optimizer and bf16 autocast of the
training loop); the encoder has no MLM head (all-MiniLM-L6-v2 ships none), so the head alone is
trained for `--head-steps` first (encoder frozen), then everything. Fine-tuning trials run
through `bench/finetune_grid.py`'s trial runner (`finetune_in_process`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # bench.finetune_grid, run as a script from anywhere


def adapt(spec: dict) -> None:
    """One masked-LM arm: `steps` optimizer steps on the train texts; saves the encoder folder."""
    import numpy as np
    import pandas as pd
    import torch

    from bertops.config import load_config
    from bertops.data.batching import bucketed_batches
    from bertops.models.pretrained import load_tokenizer, resolve_model_source
    from bertops.pretraining.masking import mask_tokens
    from bertops.pretraining.model import build_pretraining_model
    from bertops.training.optim import build_optimizer, linear_warmup_decay, optimizer_step
    from bertops.training.setup import autocast, pick_device, pick_precision, set_seed

    root, out = Path(spec["root"]), Path(spec["out"])
    config = load_config(root / "params.yaml")
    train = pd.read_parquet(root / config.paths.prepared / config.ingest.dataset / "train.parquet")
    ids = [np.asarray(row, dtype=np.int64) for row in train["input_ids"]]  # [CLS] ... [SEP], as fine-tuning sees them
    tokenizer = load_tokenizer(config.finetune.model)
    source = resolve_model_source(config.finetune.model)
    set_seed(spec["seed"])
    device = pick_device("auto")
    precision = pick_precision("auto", device)
    model = build_pretraining_model(None, source, tokenizer.vocab_size, config.prepare.max_length).to(device).train()
    head = [p for n, p in model.named_parameters() if n.startswith("cls.")]
    rng = np.random.default_rng(spec["seed"])
    special_ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    log, started = [], time.perf_counter()

    def batches():
        epoch = 0
        while True:
            yield from bucketed_batches([len(x) for x in ids], spec["batch_size"], 50, seed=epoch)
            epoch += 1

    def run(steps: int, params, lr: float, phase: str, stream) -> None:
        optimizer = build_optimizer(model, lr, 0.01, device) if params is None else torch.optim.AdamW(params, lr=lr)
        scheduler = linear_warmup_decay(optimizer, int(0.06 * steps), steps)
        scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 or fp32: no loss scaling
        window = []
        for step in range(1, steps + 1):
            index = next(stream)
            width = max(len(ids[i]) for i in index)
            batch = np.full((len(index), width), tokenizer.pad_token_id, dtype=np.int64)
            for r, i in enumerate(index):
                batch[r, : len(ids[i])] = ids[i]
            masked = mask_tokens(
                batch, np.isin(batch, special_ids), rng, tokenizer.mask_token_id, tokenizer.vocab_size, 0.15
            )
            inputs = torch.from_numpy(masked.input_ids).to(device)
            attention = torch.from_numpy(batch != tokenizer.pad_token_id).long().to(device)
            positions = torch.from_numpy(masked.positions).to(device)
            labels = torch.from_numpy(masked.labels).to(device)
            with autocast(device, precision):
                states = model.bert(input_ids=inputs, attention_mask=attention, return_dict=False)[0]
                logits = model.cls.predictions(states[positions[:, 0], positions[:, 1]]).float()
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            optimizer_step(model, optimizer, scheduler, scaler, 1.0)
            window.append(float(loss.detach()))
            if step % 100 == 0 or step == steps:
                log.append({"phase": phase, "step": step, "mlm_loss": round(sum(window) / len(window), 4)})
                print(json.dumps(log[-1]), flush=True)
                window = []

    stream = batches()
    if spec["head_steps"]:
        for p in model.bert.parameters():
            p.requires_grad_(False)
        run(spec["head_steps"], head, 1e-3, "head", stream)
        for p in model.bert.parameters():
            p.requires_grad_(True)
    run(spec["steps"], None, spec["lr"], "all", stream)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    summary = {"steps": spec["steps"], "seconds": round(time.perf_counter() - started, 1), "log": log}
    (out / "adaptation.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"done": str(out), "seconds": summary["seconds"]}), flush=True)


def link_prepared(workspace: Path, root: Path, model: str) -> None:
    """root/data/prepared/<dataset>/: links to the workspace's prepared files, with a meta.json
    that names `model` as the tokenizer (the loop refuses data tokenized for another model; the
    adapted encoder keeps the shipped tokenizer, so the token ids are the same)."""
    from bertops.config import load_config

    config = load_config(workspace / "params.yaml")
    source = workspace / config.paths.prepared / config.ingest.dataset
    target = root / config.paths.prepared / config.ingest.dataset
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name != "meta.json":
            (target / item.name).symlink_to(item)
    meta = json.loads((source / "meta.json").read_text())
    (target / "meta.json").write_text(json.dumps(meta | {"tokenizer": model}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, help="holds params.yaml and data/prepared/<dataset>/")
    parser.add_argument("--steps", default="1000,4000", help="masked-LM steps per arm (comma-separated)")
    parser.add_argument("--head-steps", type=int, default=200, help="head-only steps first (encoder frozen)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", default="42,43,44", help="finetune.seed values per arm")
    parser.add_argument("--parallel", type=int, default=9, help="fine-tuning trials at a time")
    parser.add_argument("--deadline-s", type=float, default=float("inf"), help="launch no trial after this")
    parser.add_argument("--grace-s", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=Path("bench/out/tapt.json"))
    parser.add_argument("--adapt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.adapt:
        return adapt(json.loads(args.adapt))

    from bench.finetune_grid import Subprocesses, trial_argv, trial_result, trial_workspace

    workspace = args.workspace.resolve()
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"bertops-tapt-{os.getpid()}"
    scratch.mkdir(parents=True)
    start, seeds = time.time(), args.seeds.split(",")
    arms: dict[str, dict] = {"shipped": {"model": None, "status": "ready"}}
    adapting, trials, results = Subprocesses(), Subprocesses(), []
    for steps in args.steps.split(","):
        name, folder = f"mlm{steps}", scratch / f"encoder-mlm{steps}"
        spec = {"root": str(workspace), "out": str(folder), "steps": int(steps), "head_steps": args.head_steps}
        spec |= {"lr": args.lr, "batch_size": args.batch_size, "seed": 7}
        adapting.start(name, [sys.executable, str(HERE), "--adapt", json.dumps(spec)], scratch / f"{name}.log")
        arms[name] = {"model": str(folder), "status": "adapting"}
    pending = [("shipped", s) for s in seeds]  # (arm, seed) ready to launch

    while adapting or pending or trials:
        elapsed = time.time() - start
        hard_stop = elapsed > args.deadline_s + args.grace_s
        for name, status, lines in adapting.poll(kill=hard_stop):
            if status == "done":
                arms[name]["adaptation"] = json.loads((Path(arms[name]["model"]) / "adaptation.json").read_text())
                pending += [(name, s) for s in seeds]
            else:
                arms[name]["log_tail"] = lines[-15:]
            arms[name]["status"] = "ready" if status == "done" else status
            print(f"[{elapsed:5.0f}s] adaptation {name}: {arms[name]['status']}", flush=True)
        while pending and len(trials) < args.parallel and elapsed < args.deadline_s:
            arm, seed = pending.pop(0)
            root = trial_workspace(workspace, scratch / f"{arm}-{seed}")
            model = arms[arm]["model"]
            if model is None:
                (root / "data").symlink_to(workspace / "data")
            else:  # the same prepared files; meta names the adapted folder (its tokenizer is the shipped one)
                link_prepared(workspace, root, model)
            overrides = [f"finetune.seed={seed}"] + ([f"finetune.model={model}"] if model else [])
            trials.start((arm, seed), trial_argv(root, overrides), root / "log.txt")
        for (arm, seed), status, lines in trials.poll(kill=hard_stop):
            entry = {"arm": arm, "seed": seed} | trial_result(status, lines)
            entry.pop("history", None)
            results.append(entry)
            print(
                f"[{time.time() - start:5.0f}s] {entry['status']:10} {arm:10} seed {seed} "
                f"val={entry.get('best_validation_accuracy')} t={entry.get('train_seconds')}",
                flush=True,
            )
        if elapsed >= args.deadline_s and not trials and not adapting:
            break
        time.sleep(1.0)
    report = {"arms": arms, "trials": results, "not_started": pending, "seconds": round(time.time() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print("\nvalidation accuracy by arm (mean, min-max over seeds):")
    for arm in arms:
        scores = [r["best_validation_accuracy"] for r in results if r["arm"] == arm and r["status"] == "done"]
        if scores:
            print(f"  {arm:10} {sum(scores) / len(scores):.4f} ({min(scores):.4f}-{max(scores):.4f}) n={len(scores)}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
