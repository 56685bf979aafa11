"""A version's reference profile: what the model expects, measured on the data it was judged on.

`package` runs the eval split through the runtime that will be served (the gate's) and keeps, per
input, what the endpoint's window keeps of live traffic (bertops.monitoring.window): lengths in
word pieces, the unknown word-piece share, truncation, the predicted label and confidence, and the
sentence embedding the head reads. The arrays go into the version's folder (`monitor/reference.npz`,
so into the model store and the Bento), and a summary into the registry record
(`bertops models show`).

NER and QA versions get the input side (lengths, unknown word pieces, truncation: for QA, of the
question + context pair, truncated = read in more than one window); their answers are not
profiled yet.

Why the eval split and not train: the eval split is what the model was judged on, it holds inputs
the model has not been fitted to (its confidence there is the confidence it will have on new
text), and for corpora such as SST-2 it is the one split shaped like real requests (SST-2's train
split is mostly sub-sentence phrases).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bertops.encoding import encode, normalize_input, to_feeds
from bertops.errors import BertopsError
from bertops.monitoring.window import EMBEDDING, answer_features, text_features

REFERENCE_DIR = "monitor"
ARRAYS, SUMMARY = "reference.npz", "reference.json"


class ReferenceMissing(BertopsError, LookupError):
    """A version packaged before reference profiles existed, and not computed for it since."""


def _runner(model_dir: Path, settings: dict):
    """feeds -> (probabilities, embeddings) on the runtime the version is served on."""
    from bertops.models.export import INPUTS, onnx_session

    runtime = settings.get("runtime") or "torch"
    if runtime != "torch":
        session = onnx_session(model_dir / settings["onnx_files"][runtime])

        def forward(feeds: dict) -> tuple[np.ndarray, np.ndarray]:
            return tuple(session.run(["logits", "embedding"], {k: feeds[k] for k in INPUTS}))

    else:
        import torch

        from bertops.models.classifier import load_classifier

        model, _ = load_classifier(model_dir)

        def forward(feeds: dict) -> tuple[np.ndarray, np.ndarray]:
            tensors = {k: torch.from_numpy(feeds[k]) for k in INPUTS}
            with torch.inference_mode():
                logits = model(**tensors).logits.float().numpy()
                hidden = model.base_model(**tensors).last_hidden_state.float()
                mask = tensors["attention_mask"].unsqueeze(-1).float()
                return logits, ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).numpy()

    def run(feeds: dict) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = forward(feeds)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True), embeddings

    return run


def build_reference(model_dir: Path, settings: dict, inputs: list, max_rows: int, seed: int,
                    batch_size: int = 64) -> dict[str, np.ndarray]:  # fmt: skip
    """Per input (up to `max_rows`, a seeded sample): the window's columns, measured as the endpoint
    measures live requests (same normalisation and truncation, same runtime)."""
    from transformers import AutoTokenizer

    if len(inputs) > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(inputs), max_rows, replace=False))
        inputs = [inputs[i] for i in pick]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.model_max_length = 10**9
    run = _runner(Path(model_dir), settings) if settings["task"] == "classification" else None
    columns: dict[str, list] = {}
    for start in range(0, len(inputs), batch_size):
        batch = [
            normalize_input(x, settings["unicode_form"], settings["lowercase"])
            for x in inputs[start : start + batch_size]
        ]
        encoded = encode(tokenizer, batch, settings["max_length"])
        feeds = to_feeds(encoded.input_ids, encoded.token_type_ids, tokenizer.pad_token_id)
        parts = text_features(feeds["input_ids"], feeds["attention_mask"], tokenizer.unk_token_id, encoded.truncated)
        if run is not None:
            probabilities, embeddings = run(feeds)
            parts.update(answer_features(probabilities))
            parts[EMBEDDING] = embeddings.astype(np.float16)
        for name, values in parts.items():
            columns.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in columns.items()}


def summarize(arrays: dict[str, np.ndarray], labels: list[str], source: str) -> dict:
    """What `bertops models show` prints of a profile."""
    tokens = arrays["tokens"].astype(np.float64)
    out: dict = {
        "source": source,
        "rows": int(len(tokens)),
        "tokens": {q: float(np.quantile(tokens, p)) for q, p in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))},
        "unknown_share_mean": round(float(arrays["unknown_share"].mean()), 5),
        "truncation_rate": round(float(arrays["truncated"].mean()), 5),
    }
    if "label" in arrays:
        counts = np.bincount(arrays["label"].astype(np.int64), minlength=len(labels))
        out["label_shares"] = {name: round(int(c) / len(tokens), 4) for name, c in zip(labels, counts)}
        histogram, _ = np.histogram(arrays["confidence"], bins=10, range=(0.0, 1.0))
        out["confidence_histogram"] = {"bins": 10, "range": [0.0, 1.0], "counts": histogram.tolist()}
        out["confidence_mean"] = round(float(arrays["confidence"].mean()), 4)
    if EMBEDDING in arrays:
        out["embedding"] = {"rows": int(len(arrays[EMBEDDING])), "dims": int(arrays[EMBEDDING].shape[1]),
                            "dtype": "float16"}  # fmt: skip
    return out


def write_reference(model_dir: Path, arrays: dict[str, np.ndarray], summary: dict) -> dict:
    out = Path(model_dir) / REFERENCE_DIR
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / ARRAYS, allow_pickle=False, **arrays)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def read_reference(model_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(model_dir) / REFERENCE_DIR / ARRAYS
    if not path.is_file():
        raise ReferenceMissing(
            f"{model_dir} has no reference profile (packaged before bertops kept one); compute it now with "
            "`bertops monitor --build-reference` (from the prepared eval split)"
        )
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    return arrays, json.loads((path.parent / SUMMARY).read_text())


def profile_version(model_dir: Path, prepared: Path, inputs: list, max_rows: int, seed: int) -> dict:
    """Build and write the reference profile of the packaged model in `model_dir` from `inputs` (the
    task's `monitor_inputs`: the eval split in `prepared`); returns its summary."""
    settings = json.loads((Path(model_dir) / "bertops_serving.json").read_text())
    labels: list[str] = []
    if settings["task"] == "classification":
        id2label = json.loads((prepared / "labels.json").read_text())["id2label"]
        labels = [id2label[str(i)] for i in range(len(id2label))]
    arrays = build_reference(model_dir, settings, inputs, max_rows, seed)
    return write_reference(model_dir, arrays, summarize(arrays, labels, f"{prepared.name} eval split"))
