"""What a model costs to serve: weights on disk and the latency of one request on the serving path.

The latency is timed in-process on the same steps the endpoint runs per request (normalise ->
tokenize -> forward -> softmax, batch of one, `torch.inference_mode`, the default thread pool),
without HTTP, so it measures the model and not the network stack; `bench/` measures the HTTP path.
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
