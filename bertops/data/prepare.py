"""`prepare`: normalise, de-duplicate, split (stratified, leak-free) and tokenize the corpus.

Writes `data/prepared/<dataset>/{train,eval}.parquet` (text, label id, input_ids), the label map,
and token-length statistics (a DVC metric) and histogram (a DVC plot).
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bertops.atomic import replace_dir, staging_dir
from bertops.config import Config
from bertops.data.sources import DataSourceError
from bertops.lineage import files_sha256


class ValidationFailedBefore(DataSourceError):
    """`prepare` was asked to use a corpus that has not passed validation."""


@dataclass(frozen=True)
class PrepareResult:
    out_dir: str
    rows: dict[str, int]
    dropped_duplicates: dict[str, int]
    dropped_leaks: int
    token_stats: dict[str, dict[str, float]]


def normalize_text(text: str, form: str = "NFC", lowercase: bool = False) -> str:
    """Unicode normal form + collapsed whitespace (tabs, newlines, runs of spaces -> one space)."""
    text = " ".join(unicodedata.normalize(form, text).split())
    return text.lower() if lowercase else text


def to_examples(frame: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Source columns -> (text, label id); label ids follow the order of `ingest.labels`."""
    ing, prep = config.ingest, config.prepare
    label_ids = {raw: i for i, raw in enumerate(ing.labels)}
    unknown = sorted({str(v) for v in frame[ing.label_column]} - set(label_ids))
    if unknown:
        raise DataSourceError(f"labels {unknown[:5]} are not in ingest.labels {sorted(label_ids)}; "
                              "run `bertops validate` for the offending rows, or declare them in ingest.labels")
    columns = {"text": [normalize_text(t, prep.unicode_form, prep.lowercase) for t in frame[ing.text_column]]}
    if ing.text_pair_column:
        columns["text_pair"] = [normalize_text(str(t), prep.unicode_form, prep.lowercase) if isinstance(t, str) else ""
                                for t in frame[ing.text_pair_column]]
    out = pd.DataFrame({**columns, "label": [label_ids[str(v)] for v in frame[ing.label_column]]})
    keep = out["text"] != ""
    if ing.text_pair_column:
        keep &= out["text_pair"] != ""
    return out[keep].reset_index(drop=True)


def example_keys(frame: pd.DataFrame) -> pd.Series:
    """What makes an example itself: its text, or its (text, second sentence) pair."""
    return frame["text"] + " ||| " + frame["text_pair"] if "text_pair" in frame.columns else frame["text"]


def model_inputs(frame: pd.DataFrame) -> list:
    """The model's inputs for a prepared frame: texts, or (text, second sentence) pairs."""
    if "text_pair" in frame.columns:
        return list(zip(frame["text"], frame["text_pair"]))
    return frame["text"].tolist()


def encode_inputs(tokenizer, inputs: list, **kwargs):
    """Tokenize texts or (text, text_pair) tuples (BERT's [CLS] a [SEP] b [SEP] with segment ids)."""
    if inputs and isinstance(inputs[0], (tuple, list)):
        return tokenizer([a for a, _ in inputs], [b for _, b in inputs], **kwargs)
    return tokenizer(list(inputs), **kwargs)


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop repeated examples, keeping the first occurrence."""
    kept = frame[~example_keys(frame).duplicated(keep="first")].reset_index(drop=True)
    return kept, len(frame) - len(kept)


def stratified_split(frame: pd.DataFrame, eval_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-label shuffled split; every label with >= 2 rows lands in both parts."""
    rng = np.random.default_rng(seed)
    train_parts, eval_parts = [], []
    for _, group in frame.groupby("label", sort=True):
        order = rng.permutation(len(group))
        n_eval = int(round(len(group) * eval_fraction))
        n_eval = min(max(n_eval, 1 if len(group) >= 2 else 0), len(group) - 1) if len(group) > 1 else 0
        eval_parts.append(group.iloc[order[:n_eval]])
        train_parts.append(group.iloc[order[n_eval:]])
    train = pd.concat(train_parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    evals = pd.concat(eval_parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return train, evals


def subsample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A stratified sample of `rows` rows (0 or more rows than present = keep all)."""
    if rows <= 0 or rows >= len(frame):
        return frame
    _, sample = stratified_split(frame, rows / len(frame), seed)
    return sample


def sample_splits(splits: dict[str, list], prep) -> None:
    """In place: a reproducible sample of each split, in file order (smoke runs of the list-based
    tasks): train to prep.max_train_rows, validation and eval to prep.max_eval_rows; 0 = keep all."""
    for split, rows in (("train", prep.max_train_rows), ("validation", prep.max_eval_rows), ("eval", prep.max_eval_rows)):
        if rows and len(splits[split]) > rows:
            keep = sorted(np.random.default_rng(prep.seed).choice(len(splits[split]), rows, replace=False))
            splits[split] = [splits[split][i] for i in keep]


def write_prepare_reports(config: Config, root: Path, out_dir: Path, splits: dict[str, list], stats: dict,
                          extra: dict | None = None) -> PrepareResult:
    """The prepare reports of the list-based tasks (NER, QA): rows, token statistics, a plot file."""
    rows = {split: len(items) for split, items in splits.items()}
    result = PrepareResult(str(out_dir), rows, {split: 0 for split in splits}, 0, stats)
    reports = root / config.paths.reports / "prepare"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "token_stats.json").write_text(json.dumps({"rows": rows, **(extra or {}), "tokens": stats}, indent=2) + "\n")
    pd.DataFrame([{"split": s, "tokens": 0, "examples": n} for s, n in rows.items()]).to_csv(
        reports / "token_lengths.csv", index=False)
    (reports / "prepare.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def remove_leaks(train: pd.DataFrame, evals: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop train rows whose (normalised) example is also an eval example; eval stays comparable."""
    leaked = example_keys(train).isin(set(example_keys(evals)))
    return train[~leaked].reset_index(drop=True), int(leaked.sum())


def token_stats(lengths: list[int], max_length: int) -> dict[str, float]:
    arr = np.asarray(lengths)
    return {
        "mean": round(float(arr.mean()), 2),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
        "truncated_share": round(float((arr >= max_length).mean()), 4),
    }


def prepare(config: Config, root: Path = Path(".")) -> PrepareResult:
    """Raw corpus -> tokenized, de-duplicated, leak-free train/eval files."""
    from bertops.data.sources import load_raw
    from bertops.models.pretrained import load_tokenizer

    if config.ingest.task == "ner":
        from bertops.tasks.token_classification import prepare_ner

        return prepare_ner(config, root)
    if config.ingest.task == "qa":
        from bertops.tasks.question_answering import prepare_qa

        return prepare_qa(config, root)
    frames, manifest = load_raw(config, root)
    require_validated(config, root, manifest["data_hash"])
    prep = config.prepare
    train, dup_train = deduplicate(to_examples(frames["train"], config))
    dropped = {"train": dup_train}
    if "eval" in frames:
        evals, dropped["eval"] = deduplicate(to_examples(frames["eval"], config))
    else:
        train, evals = stratified_split(train, prep.eval_fraction, prep.seed)
    train, leaks = remove_leaks(train, evals)
    train = subsample(train, prep.max_train_rows, prep.seed)
    evals = subsample(evals, prep.max_eval_rows, prep.seed)
    # Checkpoint selection gets its own slice of train, so the eval figures stay unbiased.
    train, validation = stratified_split(train, prep.validation_fraction, prep.seed + 1)
    for split, frame in (("train", train), ("validation", validation), ("eval", evals)):
        if frame.empty:
            raise DataSourceError(
                f"the {split} split is empty after de-duplication, leak removal and splitting; the corpus is too "
                "small or overlaps eval (check prepare.max_train_rows, prepare.validation_fraction, eval_fraction)")

    tokenizer = load_tokenizer(config.finetune.model)
    stats, histograms = {}, []
    out_dir = root / config.paths.prepared / config.ingest.dataset
    staging = staging_dir(out_dir)  # written in full, then swapped in: never a mix of old and new
    for split, frame in (("train", train), ("validation", validation), ("eval", evals)):
        # Lengths before truncation, for honest statistics; ids truncated to max_length.
        inputs = model_inputs(frame)
        full = encode_inputs(tokenizer, inputs, add_special_tokens=True, truncation=False)["input_ids"]
        lengths = [len(ids) for ids in full]
        if "text_pair" in frame.columns:  # cut the longer sentence first, keep both and both [SEP]s
            ids = encode_inputs(tokenizer, inputs, truncation="longest_first", max_length=prep.max_length)["input_ids"]
        else:
            ids = [ids[: prep.max_length - 1] + [ids[-1]] if len(ids) > prep.max_length else ids for ids in full]
        frame = frame.assign(input_ids=ids)
        frame.to_parquet(staging / f"{split}.parquet", index=False)
        stats[split] = token_stats(lengths, prep.max_length)
        counts, edges = np.histogram(lengths, bins=np.arange(0, max(lengths) + 9, 8))
        histograms += [{"split": split, "tokens": int(e), "examples": int(c)} for e, c in zip(edges[:-1], counts)]

    label_names = list(config.ingest.labels.values())
    (staging / "labels.json").write_text(json.dumps({"id2label": dict(enumerate(label_names))}, indent=2) + "\n")
    prepared_hash = files_sha256([staging / f"{s}.parquet" for s in ("train", "validation", "eval")] + [staging / "labels.json"])
    (staging / "meta.json").write_text(
        json.dumps({"dataset": config.ingest.dataset, "data_hash": manifest["data_hash"], "prepared_hash": prepared_hash,
                    "tokenizer": config.finetune.model, "max_length": prep.max_length}, indent=2) + "\n"
    )
    replace_dir(staging, out_dir)
    reports = root / config.paths.reports / "prepare"
    reports.mkdir(parents=True, exist_ok=True)
    rows = {"train": len(train), "validation": len(validation), "eval": len(evals)}
    result = PrepareResult(str(out_dir), rows, dropped, leaks, stats)
    (reports / "token_stats.json").write_text(json.dumps({"rows": result.rows, "tokens": stats}, indent=2) + "\n")
    pd.DataFrame(histograms).to_csv(reports / "token_lengths.csv", index=False)
    (reports / "prepare.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def require_validated(config: Config, root: Path, data_hash: str) -> None:
    """Refuse to prepare a corpus that did not pass `validate` (or changed since it did)."""
    path = root / config.paths.reports / "validate" / "report.json"
    if not path.is_file():
        raise ValidationFailedBefore(f"no validation report at {path}; run `bertops validate` first")
    report = json.loads(path.read_text())
    if report.get("data_hash") != data_hash:
        raise ValidationFailedBefore("the raw corpus changed since it was validated; run `bertops validate` again")
    if not report.get("success"):
        raise ValidationFailedBefore(f"the corpus failed validation (see {path}); fix the data and re-run `bertops validate`")


def load_prepared(config: Config, root: Path = Path(".")) -> tuple[dict[str, pd.DataFrame], dict[int, str], dict]:
    """({train, validation, eval} frames, id2label, meta) as written by `prepare`."""
    out_dir = root / config.paths.prepared / config.ingest.dataset
    if not (out_dir / "meta.json").is_file():
        raise FileNotFoundError(f"{out_dir} holds no prepared corpus; run `bertops prepare` first")
    id2label = {int(k): v for k, v in json.loads((out_dir / "labels.json").read_text())["id2label"].items()}
    meta = json.loads((out_dir / "meta.json").read_text())
    frames = {split: pd.read_parquet(out_dir / f"{split}.parquet") for split in ("train", "validation", "eval")}
    return frames, id2label, meta
