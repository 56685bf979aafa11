"""Embedding throughput: the bertops endpoint's POST /embed against a plain PyTorch mean-pooling
server of the same encoder, in the same run.

The encoder is the one `/embed` serves by default (`serve.embedding_model: parent`: the encoder
the production model was fine-tuned from, packaged with the version, on the runtime its export
check chose). The baseline (bench/naive_server.py --embed) is FastAPI + transformers `AutoModel`
in PyTorch fp32, each request's texts as one padded batch, no batching across requests, at its
strongest setting: the grid {sync, async route} x {1, 2 torch threads}, every point reported, the
best kept. Then bertops and that best point alternate for `--rounds` rounds (the order flips each
round). Load: 32 clients, each request 8 SST-2 dev sentences; texts/s = 8 x requests/s. The goal
(issue 19): bertops at least 3x the baseline on its default runtime.

    python bench/embedding_throughput.py [--requests 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import save_result, spread  # noqa: E402
from bench.drift import DATA, start  # noqa: E402
from bench.endpoint import Server, load  # noqa: E402

PER_REQUEST = 8


def naive(model_dir: Path, port: int, async_route: bool, threads: int) -> Server:
    command = [sys.executable, str(REPO / "bench" / "naive_server.py"), "--embed", "--model", str(model_dir),
               "--port", str(port), "--threads", str(threads)] + (["--async-route"] if async_route else [])  # fmt: skip
    return Server(command, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from bertops.config import load_config
    from bertops.model_store import fetch_version, registry_for

    config = load_config(REPO / "params.yaml", None, [])
    name = config.package.model_name
    version = registry_for(config, REPO).production(name)
    model_dir = fetch_version(config, version, REPO)
    settings = json.loads((model_dir / "bertops_serving.json").read_text())
    embedding = settings.get("embedding")
    if not embedding:
        raise SystemExit(f"{name}:{version} has no designated embedding model (serve.embedding_model: parent)")
    from bertops.models.pretrained import resolve_model_source

    # the packaged folder keeps only the runtime it serves (ONNX); the baseline loads the same
    # encoder's PyTorch weights from where `package` took them (finetune.model)
    encoder = resolve_model_source(config.finetune.model)
    dev = [r["sentence"] for r in csv.DictReader(open(DATA / "sst2" / "dev.tsv"), delimiter="\t")]
    bodies = [json.dumps({"texts": dev[i : i + PER_REQUEST]}).encode() for i in range(0, len(dev), PER_REQUEST)]
    result: dict = {"model": f"{name}:{version}", "encoder": embedding["name"], "runtime": embedding["runtime"],
                    "clients": 32, "texts_per_request": PER_REQUEST, "machine": platform.platform(),
                    "cores": os.cpu_count()}  # fmt: skip

    def texts_per_s(port: int) -> dict:
        run = load(port, "/embed", bodies, args.requests, 32)
        assert run["statuses"].get(200) == args.requests and not run["lost"], run
        return {**run, "texts_per_s": round(run["rps"] * PER_REQUEST, 1)}

    grid = []
    for async_route in (False, True):
        for threads in (1, 2):
            server = naive(encoder, 3961, async_route, threads)
            try:
                load(3961, "/embed", bodies, 64, 32)
                point = texts_per_s(3961)
            finally:
                server.stop()
            grid.append({"route": "async" if async_route else "sync", "threads": threads, **point})
            print(json.dumps(grid[-1]), flush=True)
    best = max(grid, key=lambda p: p["texts_per_s"])
    result["naive_grid"] = grid
    result["naive_best"] = {"route": best["route"], "threads": best["threads"]}

    ours = start([], 3962)
    theirs = naive(encoder, 3961, best["route"] == "async", best["threads"])
    try:
        for port in (3962, 3961):
            load(port, "/embed", bodies, 64, 32)
        rates: dict[str, list[float]] = {"bertops": [], "naive": []}
        for r in range(args.rounds):
            order = (("bertops", 3962), ("naive", 3961))
            for label, port in order if r % 2 == 0 else order[::-1]:
                rates[label].append(texts_per_s(port)["texts_per_s"])
    finally:
        ours.stop()
        theirs.stop()
    result["bertops_texts_per_s"] = spread(rates["bertops"])
    result["naive_texts_per_s"] = spread(rates["naive"])
    result["ratio"] = spread([a / b for a, b in zip(rates["bertops"], rates["naive"])], 2)
    save_result("embedding_throughput", result)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"{time.time() - started:.0f}s")
