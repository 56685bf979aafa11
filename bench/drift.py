"""Drift monitoring: false alarms, detection, and what the live window costs the endpoint.

Against the registry's production SST-2 model (run `make run` first), served the way `bertops
serve` serves it, traffic to 127.0.0.1 only:

1. False alarms: 20 in-distribution windows of 500. SST-2's only full sentences the model never
   trained on are the 872 dev sentences, which are also what the packaged reference profile is
   built from. So each trial splits dev at random (a seed per trial) into a reference of 372 and a
   held-back window of 500: the 500 go through the endpoint, the monitor reads its window
   (GET /monitor/window) and judges it against a reference profile built from the 372 by the same
   code as `package` (bertops.monitoring.reference) at the default threshold.
2. Detection: windows of text from other sources (WikiText-2 sentences, SQuAD questions, SQuAD
   contexts, CoNLL-2003 sentences), judged against the version's packaged reference profile
   (all 872 dev sentences); 5 draws per source at each window size 100..500, the smallest window
   size detected in all 5 reported. Subtle shifts from SST-2 itself: only long sentences (more
   word pieces than the dev median) and only negated sentences (not/no/never/nothing/nor/n't);
   these windows are drawn from dev, so they also sit inside the reference (which makes them harder,
   not easier, to tell apart).
3. Cost: requests/s at 32 clients (single dev sentences), monitoring on vs off, two endpoints
   started side by side and loaded in alternating rounds (the order flips each round); the ratio
   per round, its median and spread (goal: on >= 0.95 x off).

    python bench/drift.py [--rounds 6] [--requests 2000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import save_result, spread  # noqa: E402
from bench.endpoint import Server, load  # noqa: E402

DATA = REPO.parent / "shared" / "datasets"
SIZES = (100, 150, 200, 300, 400, 500)
NEGATION = re.compile(r"\b(not|no|never|nothing|nor)\b|n't", re.IGNORECASE)


def sources() -> dict[str, list[str]]:
    dev = [r["sentence"] for r in csv.DictReader(open(DATA / "sst2" / "dev.tsv"), delimiter="\t")]
    wiki = []
    for line in (DATA / "wikitext-2-raw" / "wiki.test.raw").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("="):
            wiki += [s for s in re.split(r"(?<=[.!?]) ", line) if len(s.split()) >= 5]
    squad = json.loads((DATA / "squad-v1.1" / "dev-v1.1.json").read_text())["data"]
    questions = [q["question"] for a in squad for p in a["paragraphs"] for q in p["qas"]]
    contexts = [p["context"] for a in squad for p in a["paragraphs"]]
    conll, words = [], []
    for line in (DATA / "conll2003" / "test.txt").read_text().splitlines():
        if not line.strip():
            if len(words) >= 3:
                conll.append(" ".join(words))
            words = []
        elif not line.startswith("-DOCSTART-"):
            words.append(line.split()[0])
    return {"sst2-dev": dev, "wikitext-sentences": wiki, "squad-questions": questions,
            "squad-contexts": contexts, "conll-sentences": conll}  # fmt: skip


def start(config_overrides: list[str], port: int) -> Server:
    from bertops.config import load_config
    from bertops.server import prepare

    config = load_config(REPO / "params.yaml", None, [f"serve.port={port}", *config_overrides])
    command, env = prepare(config, REPO)
    return Server(command, port, env)


def send(port: int, texts: list[str], batch: int = 32) -> None:
    import httpx

    with httpx.Client(timeout=60) as http:
        for i in range(0, len(texts), batch):
            reply = http.post(f"http://127.0.0.1:{port}/classify", json={"texts": texts[i : i + batch]})
            reply.raise_for_status()


def window(port: int, last: int) -> dict:
    import httpx

    from bertops.monitoring.window import decode_arrays

    reply = httpx.get(f"http://127.0.0.1:{port}/monitor/window", params={"last": last}, timeout=60)
    reply.raise_for_status()
    return decode_arrays(reply.json()["columns"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    from bertops.config import load_config
    from bertops.model_store import fetch_version, registry_for
    from bertops.monitoring.drift import compare
    from bertops.monitoring.reference import build_reference, read_reference

    config = load_config(REPO / "params.yaml", None, [])
    m = config.monitor
    name = config.package.model_name
    version = registry_for(config, REPO).production(name)
    model_dir = fetch_version(config, version, REPO)
    settings = json.loads((model_dir / "bertops_serving.json").read_text())
    packaged, summary = read_reference(model_dir)
    labels = list(summary["label_shares"])
    data = sources()
    dev = data["sst2-dev"]
    dev_profile = build_reference(model_dir, settings, dev, len(dev), 0)  # per dev sentence, as package does

    def judge(reference: dict, live: dict) -> dict:
        report = compare(reference, live, labels, m.alpha, m.min_window, m.permutations, m.max_embedding_rows, m.seed)
        return {"verdict": report.verdict, "drifted": report.drifted}

    port = 3931
    server = start([], port)
    result: dict = {"model": f"{name}:{version}", "alpha": m.alpha, "machine": platform.platform(),
                    "cores": os.cpu_count()}  # fmt: skip
    try:
        # 1. false alarms
        alarms = []
        for trial in range(args.trials):
            order = np.random.default_rng(1000 + trial).permutation(len(dev))
            ref_rows, held = order[:372], order[372:]
            send(port, [dev[i] for i in held])
            reference = {k: v[ref_rows] for k, v in dev_profile.items()}
            alarms.append(judge(reference, window(port, len(held))))
        result["in_distribution"] = {
            "windows": args.trials,
            "window_size": len(dev) - 372,
            "reference_rows": 372,
            "false_alarms": sum(a["verdict"] == "drift" for a in alarms),
            "features_alarmed": [a["drifted"] for a in alarms if a["drifted"]],
        }
        print(json.dumps(result["in_distribution"]), flush=True)

        # 2. detection
        tokens = dev_profile["tokens"]
        shifted = {k: v for k, v in data.items() if k != "sst2-dev"}
        shifted["sst2-long-only"] = [t for t, n in zip(dev, tokens) if n > np.median(tokens)]
        shifted["sst2-negated-only"] = [t for t in dev if NEGATION.search(t)]
        detection = {}
        for source, texts in shifted.items():
            sizes = [s for s in SIZES if s <= len(texts)] or [len(texts)]
            per_size = {}
            for size in sizes:
                hits, drifted = 0, {}
                for draw in range(args.draws):
                    pick = np.random.default_rng(draw).choice(len(texts), size, replace=False)
                    send(port, [texts[i] for i in pick])
                    verdict = judge(packaged, window(port, size))
                    hits += verdict["verdict"] == "drift"
                    for f in verdict["drifted"]:
                        drifted[f] = drifted.get(f, 0) + 1
                per_size[size] = {"detected": hits, "draws": args.draws, "features": drifted}
            always = [s for s in sizes if all(per_size[t]["detected"] == args.draws for t in sizes if t >= s)]
            detection[source] = {"pool": len(texts), "by_window": per_size,
                                 "smallest_window_always_detected": min(always) if always else None}  # fmt: skip
            print(source, json.dumps(detection[source]), flush=True)
        result["detection"] = detection
    finally:
        server.stop()

    # 3. cost: monitoring on vs off, side by side, alternating rounds
    on, off = start([], 3932), start(["serve.monitor.enabled=false"], 3933)
    try:
        bodies = [json.dumps({"texts": [t]}).encode() for t in dev]
        for srv in (on, off):
            load(srv.port, "/classify", bodies, 300, 32)  # warm
        rps: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(args.rounds):
            for label, srv in (("on", on), ("off", off)) if r % 2 == 0 else (("off", off), ("on", on)):
                run = load(srv.port, "/classify", bodies, args.requests, 32)
                assert run["statuses"].get(200) == args.requests, run
                rps[label].append(run["rps"])
        ratios = [a / b for a, b in zip(rps["on"], rps["off"])]
        result["cost"] = {"clients": 32, "requests_per_round": args.requests, "rps_on": spread(rps["on"]),
                          "rps_off": spread(rps["off"]), "ratio_on_off": spread(ratios, 3)}  # fmt: skip
    finally:
        on.stop()
        off.stop()
    save_result("drift", result)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"{time.time() - started:.0f}s")
