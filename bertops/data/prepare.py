"""`prepare`: the stage, and the pieces every task's prepare shares.

A task's `prepare` normalises, de-duplicates, splits (leak-free) and tokenizes its corpus into
`data/prepared/<dataset>/{train,validation,eval}.parquet` + `labels.json` + `meta.json`, through
the helpers here: the validation guard, stratified splits and samples, token statistics (a DVC
metric), the reports, and `load_prepared` for the stages after it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bertops.config import Config
from bertops.data.sources import DataSourceError


class ValidationFailedBefore(DataSourceError):
    """`prepare` was asked to use a corpus that has not passed validation."""


@dataclass(frozen=True)
class PrepareResult:
    out_dir: str
    rows: dict[str, int]
    dropped_duplicates: dict[str, int]
    dropped_leaks: int
    token_stats: dict[str, dict[str, float]]


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


def whole_text_split(
    frame: pd.DataFrame, keys: pd.Series, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(train, validation, train rows dropped): a validation slice that shares no text with train,
    for corpora whose rows include parts of other rows. SST-2's train holds ~6,900 sentences and
    ~60,000 of their labelled phrases: a random slice is then ~88% phrases of train sentences, and
    scores memory rather than generalisation to new sentences (what the eval split asks).

    Validation is a stratified `fraction` of the *whole texts* (rows that are no run of words of
    another row); every row that is a run of words of a chosen text (its phrases) leaves train.
    A corpus without such rows splits exactly as `stratified_split` does."""
    words = [tuple(key.split()) for key in keys]
    present = set(words)
    lengths = sorted({len(w) for w in present})
    contained: set[tuple[str, ...]] = set()
    for text in present:
        contained |= _runs(text, lengths, present)
    marked = frame.assign(_words=words)
    is_part = np.array([w in contained for w in words], dtype=bool)
    rest, validation = stratified_split(marked[~is_part], fraction, seed)
    taken: set[tuple[str, ...]] = set()
    for text in validation["_words"]:
        taken |= _runs(text, lengths, present)
    parts = marked[is_part]
    kept_parts = parts[[w not in taken for w in parts["_words"]]]
    train = rest if kept_parts.empty else pd.concat([rest, kept_parts]).sample(frac=1.0, random_state=seed)
    dropped = len(parts) - len(kept_parts)
    return train.drop(columns="_words").reset_index(drop=True), validation.drop(columns="_words"), dropped


def _runs(text: tuple[str, ...], lengths: list[int], present: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """The runs of words of `text`, shorter than it, that are rows themselves (`lengths`: the row
    lengths that occur, ascending, so only windows that could match are looked up)."""
    found: set[tuple[str, ...]] = set()
    for length in lengths:
        if length >= len(text):
            break
        found.update(text[i : i + length] for i in range(len(text) - length + 1))
    return found & present


def subsample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A stratified sample of `rows` rows (0 or more rows than present = keep all)."""
    if rows <= 0 or rows >= len(frame):
        return frame
    _, sample = stratified_split(frame, rows / len(frame), seed)
    return sample


def sample_splits(splits: dict[str, list], prep) -> None:
    """In place: a reproducible sample of each split, in file order (smoke runs of the list-based
    tasks): train to prep.max_train_rows, validation and eval to prep.max_eval_rows; 0 = keep all."""
    for split, rows in (
        ("train", prep.max_train_rows),
        ("validation", prep.max_eval_rows),
        ("eval", prep.max_eval_rows),
    ):
        if rows and len(splits[split]) > rows:
            keep = sorted(np.random.default_rng(prep.seed).choice(len(splits[split]), rows, replace=False))
            splits[split] = [splits[split][i] for i in keep]


def write_prepare_reports(
    config: Config, root: Path, out_dir: Path, splits: dict[str, list], stats: dict, extra: dict | None = None
) -> PrepareResult:
    """The prepare reports of the list-based tasks (NER, QA): rows, token statistics, a plot file."""
    rows = {split: len(items) for split, items in splits.items()}
    result = PrepareResult(str(out_dir), rows, {split: 0 for split in splits}, 0, stats)
    reports = root / config.paths.reports / "prepare"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "token_stats.json").write_text(
        json.dumps({"rows": rows, **(extra or {}), "tokens": stats}, indent=2) + "\n"
    )
    pd.DataFrame([{"split": s, "tokens": 0, "examples": n} for s, n in rows.items()]).to_csv(
        reports / "token_lengths.csv", index=False
    )
    (reports / "prepare.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


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
    """The `prepare` stage: the task turns its validated raw corpus into data/prepared/<dataset>/
    (train, validation carved for checkpoint selection, eval untouched) and the prepare reports."""
    from bertops.tasks import get_task

    return get_task(config.ingest.task).prepare(config, root)


def require_validated(config: Config, root: Path, data_hash: str) -> None:
    """Refuse to prepare a corpus that did not pass `validate` (or changed since it did)."""
    path = root / config.paths.reports / "validate" / "report.json"
    if not path.is_file():
        raise ValidationFailedBefore(f"no validation report at {path}; run `bertops validate` first")
    report = json.loads(path.read_text())
    if report.get("data_hash") != data_hash:
        raise ValidationFailedBefore("the raw corpus changed since it was validated; run `bertops validate` again")
    if not report.get("success"):
        raise ValidationFailedBefore(
            f"the corpus failed validation (see {path}); fix the data and re-run `bertops validate`"
        )


def load_prepared(config: Config, root: Path = Path(".")) -> tuple[dict[str, pd.DataFrame], dict[int, str], dict]:
    """({train, validation, eval} frames, id2label, meta) as written by `prepare`."""
    out_dir = root / config.paths.prepared / config.ingest.dataset
    if not (out_dir / "meta.json").is_file():
        raise FileNotFoundError(f"{out_dir} holds no prepared corpus; run `bertops prepare` first")
    id2label = {int(k): v for k, v in json.loads((out_dir / "labels.json").read_text())["id2label"].items()}
    meta = json.loads((out_dir / "meta.json").read_text())
    frames = {split: pd.read_parquet(out_dir / f"{split}.parquet") for split in ("train", "validation", "eval")}
    return frames, id2label, meta
