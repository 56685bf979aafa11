"""How the endpoint batches: its length grouping and batch cap, against the grouping they replaced.

Each setting is the same production endpoint (`bertops serve`, the workspace's production model)
started with other `serve.*` values. The baseline is the grouping used before (a group grew while
it had fewer than 4 rows or padded at most 25% more tokens than it held; cap 32): its engine.py is
taken from git (`--before-rev`) into that endpoint's working folder, the rest is today's code.
The others are today's grouping (the cheapest partition, `serve.group_call_tokens`) at caps of 32
and 128 inputs a call. Per setting and round: POST /embed (32 clients, 8 SST-2 dev sentences a
request: texts/s) and POST /classify (32 clients, one sentence a request: requests/s), with
p50/p95. The settings take turns for `--rounds` rounds, the order rotating each round, so a slow
spell of the machine does not land on one setting only.

`--set torch-call-cost`: the classifier served on PyTorch (BERTOPS_SERVE_RUNTIME=torch, as when
both ONNX runtimes fail their check), the default `serve.group_call_tokens` before (8 tokens a
thread for every CPU runtime: engine.py of c1b0fbc) against PyTorch's own measured 29; /embed
stays on its ONNX runtime with 8 in both, a control that should read ~1.00x.

    python bench/serving_batching.py [--requests 600] [--rounds 3] [--before-rev REV]
        [--set grouping|torch-call-cost] [--workspace DIR (its registry's production model)]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import save_result, spread  # noqa: E402
from bench.drift import DATA  # noqa: E402
from bench.endpoint import Server, load  # noqa: E402

SETS = {  # name -> settings (name -> (serve.* overrides, engine.py of --before-rev?)), the baseline,
    # the default --before-rev, the endpoint's extra environment
    "grouping": (
        {
            "before: grouping by padding share, cap 32": (["serve.max_batch_size=32"], True),
            "before, cap 128": (["serve.max_batch_size=128"], True),
            "cheapest grouping, cap 32": (["serve.max_batch_size=32", "serve.group_call_tokens=8.0"], False),
            "cheapest grouping, cap 128": (["serve.max_batch_size=128", "serve.group_call_tokens=8.0"], False),
        },
        "before: grouping by padding share, cap 32",
        "e7b8be6",
        {},
    ),
    "torch-call-cost": (
        {
            "PyTorch, before: 8 tokens a thread (every CPU runtime)": ([], True),
            "PyTorch, its own 29 tokens a thread (the new default)": ([], False),
        },
        "PyTorch, before: 8 tokens a thread (every CPU runtime)",
        "c1b0fbc",
        {"BERTOPS_SERVE_RUNTIME": "torch", "BERTOPS_SERVE_UNJUDGED": "1"},
    ),
}


def start(overrides: list[str], port: int, engine_before: str | None, root: Path, extra: dict) -> Server:
    """The production endpoint of the workspace `root` (its params.yaml, registry and model store)
    with `overrides`; with `engine_before`, that engine.py in its folder."""
    from bertops.config import load_config
    from bertops.server import prepare

    config = load_config(root / "params.yaml", None, [f"serve.port={port}", *overrides])
    command, env = prepare(config, root)
    if engine_before is not None:
        (Path(command[command.index("--working-dir") + 1]) / "engine.py").write_text(engine_before)
    return Server(command, port, {**env, **extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", choices=sorted(SETS), default="grouping")
    parser.add_argument("--before-rev", help="the commit whose serving/engine.py is the baseline (default: the set's)")
    parser.add_argument("--workspace", type=Path, default=REPO, help="whose registry's production model is served")
    args = parser.parse_args()
    settings, baseline, before_rev, extra = SETS[args.set]
    args.before_rev = args.before_rev or before_rev
    before = subprocess.run(["git", "-C", str(REPO), "show", f"{args.before_rev}:serving/engine.py"],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip

    dev = [r["sentence"] for r in csv.DictReader(open(DATA / "sst2" / "dev.tsv"), delimiter="\t")]
    embed_bodies = [json.dumps({"texts": dev[i : i + 8]}).encode() for i in range(0, len(dev), 8)]
    classify_bodies = [json.dumps({"texts": [t]}).encode() for t in dev]
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    names = list(settings)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            overrides, old_engine = settings[name]
            server = start(overrides, 3963, before if old_engine else None, args.workspace.resolve(), extra)
            try:
                load(3963, "/embed", embed_bodies, 64, 32)  # warm up
                load(3963, "/classify", classify_bodies, 64, 32)
                embed = load(3963, "/embed", embed_bodies, args.requests, 32)
                classify = load(3963, "/classify", classify_bodies, args.requests, 32)
            finally:
                server.stop()
            for run in (embed, classify):
                assert run["statuses"].get(200) == args.requests and not run["lost"], run
            point = {"embed_texts_per_s": round(embed["rps"] * 8, 1), "embed_p95_ms": embed["p95_ms"],
                     "classify_rps": classify["rps"], "classify_p50_ms": classify["p50_ms"],
                     "classify_p95_ms": classify["p95_ms"]}  # fmt: skip
            runs[name].append(point)
            print(json.dumps({"round": r, "setting": name, **point}), flush=True)
    result: dict = {"machine": platform.platform(), "cores": os.cpu_count(), "requests": args.requests,
                    "rounds": args.rounds, "set": args.set, "baseline": baseline, "before_rev": args.before_rev,
                    "environment": extra, "settings": {}}  # fmt: skip
    base = runs[baseline]
    for name, points in runs.items():
        summary = {key: spread([p[key] for p in points]) for key in points[0]}
        for key in ("embed_texts_per_s", "classify_rps"):  # per round, against the baseline of that round
            summary[f"{key}_ratio"] = spread([p[key] / b[key] for p, b in zip(points, base)], 3)
        result["settings"][name] = summary
        median = {key: value["median"] for key, value in summary.items()}
        print(f"{name}: /embed {median['embed_texts_per_s']} texts/s ({median['embed_texts_per_s_ratio']}x), "
              f"/classify {median['classify_rps']} req/s ({median['classify_rps_ratio']}x), "
              f"p95 {median['classify_p95_ms']} ms")  # fmt: skip
    save_result("serving_batching" if args.set == "grouping" else f"serving_batching-{args.set}", result)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"{time.time() - started:.0f}s")
