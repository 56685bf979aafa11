"""What a model costs to serve: weights on disk and the latency of one request on the serving path.

The latency is timed in-process on the same steps the endpoint runs per request (normalise ->
tokenize -> forward on the runtime that will be served -> softmax, batch of one, the default
thread pool), without HTTP, so it measures the model and not the network stack; `bench/`
measures the HTTP path.

One timing is at the mercy of whatever else the machine does. `latency_rounds` therefore times in
rounds and reports medians with their spread, and when the production model is timed too, the two
alternate round by round (the order flipping each round), so that a busy spell lands on both and
their ratio, taken per round, stays meaningful on a shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bertops.encoding import UnicodeForm, encode, normalize_input, to_feeds

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")


def model_size_mb(model_dir: Path) -> float:
    """Megabytes (10^6 bytes) of weight files in the model folder."""
    size = sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return round(size / 1e6, 2)


def latency_profile(request: Callable[[object], object], texts: list, requests: int, warmup: int = 10) -> dict:
    """p50/p95/mean milliseconds of `request(text)` over `requests` calls cycling through `texts`."""
    if not texts:
        raise ValueError("latency_profile needs at least one text")
    for i in range(warmup):
        request(texts[i % len(texts)])
    timings = np.empty(requests)
    for i in range(requests):
        started = time.perf_counter()
        request(texts[i % len(texts)])
        timings[i] = (time.perf_counter() - started) * 1000.0
    return {
        "requests": requests,
        "p50_ms": round(float(np.percentile(timings, 50)), 3),
        "p95_ms": round(float(np.percentile(timings, 95)), 3),
        "mean_ms": round(float(timings.mean()), 3),
    }


def latency_rounds(requests: dict[str, Callable[[object], object]], texts: list, total: int, rounds: int) -> dict:
    """Time each of `requests` (name -> one request) for `total` requests in `rounds` alternating
    rounds (round r runs them in order, round r+1 in reverse). Per name: p50/p95/mean over all its
    requests' rounds as medians of the per-round figures, and the per-round p95s.

    With two names, "p95_ratio" holds the first's p95 / the second's, per round, its median and
    its spread (min, max)."""
    if not texts:
        raise ValueError("latency_rounds needs at least one text")
    names = list(requests)
    per_round = max(1, total // max(1, rounds))
    for name in names:  # warm every side once (lazy allocations, first-call compilation)
        for i in range(min(10, per_round)):
            requests[name](texts[i % len(texts)])
    timings: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t = np.empty(per_round)
            for i in range(per_round):
                item = texts[(r * per_round + i) % len(texts)]
                started = time.perf_counter()
                requests[name](item)
                t[i] = (time.perf_counter() - started) * 1000.0
            timings[name].append(t)
    out: dict = {}
    for name, per in timings.items():
        p95s = [float(np.percentile(t, 95)) for t in per]
        out[name] = {
            "requests": per_round * rounds,
            "rounds": rounds,
            "p50_ms": round(float(np.median([np.percentile(t, 50) for t in per])), 3),
            "p95_ms": round(float(np.median(p95s)), 3),
            "p95_ms_rounds": [round(v, 3) for v in p95s],
            "mean_ms": round(float(np.concatenate(per).mean()), 3),
        }
    if len(names) == 2:
        first, second = (out[n]["p95_ms_rounds"] for n in names)
        ratios = [a / b for a, b in zip(first, second) if b > 0]
        out["p95_ratio"] = {
            "of": f"{names[0]} / {names[1]}",
            "median": round(float(np.median(ratios)), 4) if ratios else None,
            "spread": [round(min(ratios), 4), round(max(ratios), 4)] if ratios else None,
            "rounds": [round(v, 4) for v in ratios],
        }
    return out


def time_against_champion(candidate, champion, texts: list, total: int, rounds: int) -> tuple[dict, dict | None]:
    """(candidate latency, champion comparison or None): the candidate's serving path timed alone,
    or alternating round by round with production's. The comparison holds the champion's latency
    and the candidate / champion p95 ratio per round (median, spread)."""
    if champion is None:
        return latency_rounds({"candidate": candidate}, texts, total, rounds)["candidate"], None
    timed = latency_rounds({"candidate": candidate, "champion": champion}, texts, total, rounds)
    return timed["candidate"], {"latency": timed["champion"], "p95_ratio": timed["p95_ratio"]}


def serving_request(
    model, tokenizer, max_length: int, unicode_form: UnicodeForm = "NFC", lowercase: bool = False
) -> Callable[[object], np.ndarray]:
    """One /classify request as the endpoint handles it (the same `bertops.encoding` steps): a text
    or a (text, second sentence) pair -> normalised -> encoded -> forward -> probabilities."""
    import torch

    def request(item) -> np.ndarray:
        encoded = encode(tokenizer, [normalize_input(item, unicode_form, lowercase)], max_length)
        feeds = to_feeds(encoded.input_ids, encoded.token_type_ids, tokenizer.pad_token_id)
        with torch.inference_mode():
            logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
            return torch.softmax(logits.float(), dim=-1).numpy()

    return request
