"""Promotion without downtime: switches under steady load, against the steady state of the same run.

A workspace of two packaged SST-2 versions (the smoke profile; built on the first run, reused
after) behind `bertops serve` (following the registry). 32 concurrent clients (a separate process,
asyncio + httpx, 127.0.0.1 only) send one text per request, back to back, for the whole run, while
the script: waits (steady state), promotes v2, rolls back to v1, starts a 10% canary of v2 and keeps
it until 5,000 requests went through it, then completes the rollout (promotes v2). Each command is
what the CLI does: the registry change, then the endpoint's admin reload.

Reported: failed requests and 5xx over the whole run; p99 latency in the steady window and in the
10 s after each command (ratio: the switch's p99 over the steady p99); seconds from each command to
the first answer from the new version; the canary's observed share over its 5,000+ requests; the
versions answering in each second. The baseline is the same endpoint's steady state in this run;
the old behaviour (restart on promotion) refused connections for ~9 s per switch.

    python bench/promotion.py [--workspace /tmp/bertops-promotion-bench] [--clients 32] [--steady 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PORT = 3941


def build(root: Path) -> tuple:
    """Two approved, packaged versions of the smoke model in `root` (reused when already there)."""
    from bertops.config import load_config
    from bertops.model_store import registry_for

    datasets = Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared" / "datasets"))
    overrides = [
        f"ingest.search_paths=['{datasets / 'sst2'}']",
        f"evaluate.behaviour={REPO / 'data' / 'behaviour' / 'sst2.yaml'}",
        f"serve.port={PORT}",
        "gate.non_inferiority_margin=1.0",
        "gate.slice_non_inferiority_margin=1.0",
        "gate.min_behaviour_pass_rate=null",
    ]
    cfg = load_config(REPO / "params.yaml", REPO / "configs" / "smoke.yaml", overrides)
    registry = registry_for(cfg, root)
    versions = [v for v, r in registry.versions(cfg.package.model_name).items() if r.get("artifact")]
    if len(versions) >= 2:
        return cfg, versions[-2], versions[-1]
    import shutil

    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate
    from bertops.packaging import package, promote
    from bertops.training.finetune import finetune

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "serving", root / "serving", dirs_exist_ok=True)
    ingest(cfg, root)
    validate(cfg, root)
    prepare(cfg, root)
    made = []
    for seed in (1, 2):
        step = load_config(REPO / "params.yaml", REPO / "configs" / "smoke.yaml", [*overrides, f"finetune.seed={seed}"])
        finetune(step, root)
        evaluate(step, root)
        assert gate(step, root).approved
        made.append(package(step, root).version)
        if seed == 1:
            promote(step, root)
    return cfg, made[0], made[1]


def load(url: str, clients: int, out: str, stop) -> None:
    """The clients: one text per request, back to back; (start, seconds, status, version) per request."""
    import httpx

    records: list = []

    async def client(i: int, http: httpx.AsyncClient) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.time()
            try:
                reply = await http.post(f"{url}/classify", json={"texts": [f"a film, take {i}-{n}"]})
                version = reply.json()[0]["model_version"] if reply.status_code == 200 else None
                records.append((started, time.time() - started, reply.status_code, version))
            except httpx.HTTPError as exc:
                records.append((started, time.time() - started, type(exc).__name__, None))

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            await asyncio.gather(*(client(i, http) for i in range(clients)))

    asyncio.run(main())
    Path(out).write_text(json.dumps(records))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bertops-promotion-bench"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--steady", type=float, default=15.0, help="seconds of steady load before the first command")
    parser.add_argument("--canary-requests", type=int, default=5000)
    args = parser.parse_args()

    from bench._common import save_result
    from bertops import server
    from bertops.model_store import registry_for

    root = args.workspace.resolve()
    cfg, v1, v2 = build(root)
    os.chdir(root)
    registry, name = registry_for(cfg, root), cfg.package.model_name
    registry.promote(name, v1, reason="bench: start from v1")
    url = server.start_detached(cfg, timeout=240)
    commands: list[tuple[str, float, str]] = []  # (what, when, the version that should answer after)

    def command(what: str, change, expect: str) -> None:
        at = time.time()
        change()
        server.follow_registry(cfg)
        commands.append((what, at, expect))

    stop = mp.get_context("spawn").Event()
    out = root / "load.json"
    loader = mp.get_context("spawn").Process(target=load, args=(url, args.clients, str(out), stop))
    try:
        loader.start()
        time.sleep(args.steady)
        steady = (time.time() - args.steady + 3, time.time())  # the first 3 s warm the clients up
        command("promote v2", lambda: registry.promote(name, v2, reason="bench"), f"{name}:{v2}")
        time.sleep(10)
        command("rollback", lambda: registry.rollback(name, reason="bench"), f"{name}:{v1}")
        time.sleep(10)
        command("canary 10% of v2", lambda: registry.start_trial(name, v2, 10, reason="bench"), f"{name}:{v2}")
        canary_from = time.time()
        # keep the canary until enough requests went through it (about 150 requests/s here)
        time.sleep(max(10.0, args.canary_requests / 120))
        canary_to = time.time()
        command("complete the canary (promote v2)", lambda: registry.promote(name, v2, reason="bench"), f"{name}:{v2}")
        time.sleep(10)
    finally:
        stop.set()
        loader.join(timeout=120)
        print(server.stop(cfg))
    records = json.loads(out.read_text())
    failed = [r for r in records if r[2] != 200]
    steady_lat = [r[1] for r in records if steady[0] <= r[0] < steady[1] and r[2] == 200]
    in_canary = [r for r in records if canary_from + 2 <= r[0] < canary_to and r[2] == 200]  # 2 s to start it
    share = sum(r[3] == f"{name}:{v2}" for r in in_canary) / max(1, len(in_canary))
    switches = []
    for what, at, expect in commands:
        window = [r[1] for r in records if at <= r[0] < at + 10 and r[2] == 200]
        first = min((r[0] + r[1] for r in records if r[0] >= at and r[3] == expect), default=None)
        switches.append(
            {
                "command": what,
                "p99_ms": round(1000 * p99(window), 1),
                "p99_ratio_to_steady": round(p99(window) / p99(steady_lat), 2),
                "first_answer_from_new_version_s": round(first - at, 2) if first else None,
                "requests": len(window),
            }
        )
    start = int(records[0][0]) if records else 0
    per_second: dict[int, dict[str, int]] = {}
    for r in records:
        if r[3]:
            second = per_second.setdefault(int(r[0]) - start, {})
            second[r[3].split(":")[1][:8]] = second.get(r[3].split(":")[1][:8], 0) + 1
    import platform

    save_result(
        "promotion",
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "date": time.strftime("%Y-%m-%d"),
            "clients": args.clients,
            "requests": len(records),
            "failed": len(failed),
            "status_5xx": sum(isinstance(r[2], int) and r[2] >= 500 for r in records),
            "failures": failed[:5],
            "steady_p99_ms": round(1000 * p99(steady_lat), 1),
            "steady_requests_per_s": round(len(steady_lat) / (steady[1] - steady[0]), 1),
            "switches": switches,
            "canary": {"requests": len(in_canary), "share_of_v2": round(share, 4), "configured": 0.10},
            "versions_per_second": per_second,
            "v1": v1,
            "v2": v2,
        },
    )


if __name__ == "__main__":
    main()
