"""Classification corpus -> normalised, de-duplicated, leak-free, stratified train / validation / eval,
tokenized through `bertops.encoding`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from bertops.atomic import replace_dir, staging_dir
from bertops.config import Config
from bertops.data.prepare import (
    PrepareResult,
    require_validated,
    stratified_split,
    subsample,
    token_stats,
    whole_text_split,
)
from bertops.data.sources import DataSourceError, load_raw
from bertops.encoding import CONTROL_CHARACTERS, encode, normalize_text
from bertops.lineage import files_sha256
from bertops.models.pretrained import load_tokenizer


def to_examples(frame: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Source columns -> (text, label id); label ids follow the order of `ingest.labels`."""
    ing, prep = config.ingest, config.prepare
    label_ids = {raw: i for i, raw in enumerate(ing.labels)}
    unknown = sorted({str(v) for v in frame[ing.label_column]} - set(label_ids))
    if unknown:
        raise DataSourceError(
            f"labels {unknown[:5]} are not in ingest.labels {sorted(label_ids)}; "
            "run `bertops validate` for the offending rows, or declare them in ingest.labels"
        )
    columns = {"text": [normalize_text(t, prep.unicode_form, prep.lowercase) for t in frame[ing.text_column]]}
    if ing.text_pair_column:
        columns["text_pair"] = [
            normalize_text(str(t), prep.unicode_form, prep.lowercase) if isinstance(t, str) else ""
            for t in frame[ing.text_pair_column]
        ]
    out = pd.DataFrame({**columns, "label": [label_ids[str(v)] for v in frame[ing.label_column]]})
    keep = out["text"] != ""
    if ing.text_pair_column:
        keep &= out["text_pair"] != ""
    return out[keep].reset_index(drop=True)


def control_character_rows(frames: dict[str, pd.DataFrame], config: Config) -> dict[str, int]:
    """Per split, the rows whose text (or second sentence) holds control characters (NUL, ...)."""
    columns = [c for c in (config.ingest.text_column, config.ingest.text_pair_column) if c]
    counts = {}
    for split, frame in frames.items():
        flags = frame[columns].astype(str).apply(lambda column: column.str.contains(CONTROL_CHARACTERS, regex=True))
        counts[split] = int(flags.any(axis=1).sum())
    return counts


def example_keys(frame: pd.DataFrame) -> pd.Series:
    """What makes an example itself: its text, or its (text, second sentence) pair."""
    return frame["text"] + " ||| " + frame["text_pair"] if "text_pair" in frame.columns else frame["text"]


def model_inputs(frame: pd.DataFrame) -> list:
    """The model's inputs for a prepared frame: texts, or (text, second sentence) pairs."""
    if "text_pair" in frame.columns:
        return list(zip(frame["text"], frame["text_pair"]))
    return frame["text"].tolist()


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop repeated examples, keeping the first occurrence."""
    kept = frame[~example_keys(frame).duplicated(keep="first")].reset_index(drop=True)
    return kept, len(frame) - len(kept)


def remove_leaks(train: pd.DataFrame, evals: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop train rows whose (normalised) example is also an eval example; eval stays comparable."""
    leaked = example_keys(train).isin(set(example_keys(evals)))
    return train[~leaked].reset_index(drop=True), int(leaked.sum())


def prepare(config: Config, root: Path) -> PrepareResult:
    """Raw corpus -> normalised, de-duplicated, leak-free, tokenized train/validation/eval files."""
    frames, manifest = load_raw(config, root)
    require_validated(config, root, manifest["data_hash"])
    prep = config.prepare
    controls = control_character_rows(frames, config)  # normalize_text strips them; count what changed
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
    validation_parts_dropped = 0
    if prep.validation_carve == "whole_texts":
        train, validation, validation_parts_dropped = whole_text_split(
            train, example_keys(train), prep.validation_fraction, prep.seed + 1
        )
    else:
        train, validation = stratified_split(train, prep.validation_fraction, prep.seed + 1)
    for split, frame in (("train", train), ("validation", validation), ("eval", evals)):
        if frame.empty:
            raise DataSourceError(
                f"the {split} split is empty after de-duplication, leak removal and splitting; the corpus is too "
                "small or overlaps eval (check prepare.max_train_rows, prepare.validation_fraction, eval_fraction)"
            )

    tokenizer = load_tokenizer(config.finetune.model)
    stats, histograms = {}, []
    out_dir = root / config.paths.prepared / config.ingest.dataset
    staging = staging_dir(out_dir)  # written in full, then swapped in: never a mix of old and new
    for split, frame in (("train", train), ("validation", validation), ("eval", evals)):
        # Lengths before truncation, for honest statistics; ids cut to max_length as serving cuts them.
        encoded = encode(tokenizer, model_inputs(frame), prep.max_length)
        lengths = encoded.lengths
        frame = frame.assign(input_ids=encoded.input_ids)
        frame.to_parquet(staging / f"{split}.parquet", index=False)
        stats[split] = token_stats(lengths, prep.max_length)
        counts, edges = np.histogram(lengths, bins=np.arange(0, max(lengths) + 9, 8))
        histograms += [{"split": split, "tokens": int(e), "examples": int(c)} for e, c in zip(edges[:-1], counts)]

    label_names = list(config.ingest.labels.values())
    (staging / "labels.json").write_text(json.dumps({"id2label": dict(enumerate(label_names))}, indent=2) + "\n")
    prepared_hash = files_sha256(
        [staging / f"{s}.parquet" for s in ("train", "validation", "eval")] + [staging / "labels.json"]
    )
    (staging / "meta.json").write_text(
        json.dumps(
            {
                "dataset": config.ingest.dataset,
                "data_hash": manifest["data_hash"],
                "prepared_hash": prepared_hash,
                "tokenizer": config.finetune.model,
                "max_length": prep.max_length,
                # what prepare changed, carried into the model's lineage
                "eval_overlap_dropped_from_train": leaks,
                "validation_carve": prep.validation_carve,
                "validation_parts_dropped_from_train": validation_parts_dropped,
                "rows_with_control_characters_stripped": controls,
            },
            indent=2,
        )
        + "\n"
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
