"""QA corpus -> a split by article (eval = held-out articles; validation carved from the rest the same
way), then doc-stride windows of [CLS] question [SEP] context [SEP] with answer token positions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bertops.config import Config
from bertops.tasks.qa.core import (
    QAExample,
    build_features,
    split_by_article,
)
from bertops.tasks.qa.validate import SPLITS, raw_examples


def _examples_frame(examples: list[QAExample]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [e.id for e in examples],
            "title": [e.title for e in examples],
            "context": [e.context for e in examples],
            "question": [e.question for e in examples],
            "answers": [json.dumps(e.answers) for e in examples],
        }
    )


def examples_of(frame: pd.DataFrame) -> list[QAExample]:
    return [
        QAExample(r.id, r.title, r.context, r.question, [tuple(a) for a in json.loads(r.answers)])
        for r in frame.itertuples()
    ]


def _features_frame(features: list[dict], training: bool) -> pd.DataFrame:
    columns = {
        "input_ids": [f["input_ids"] for f in features],
        "example_index": [f["example_index"] for f in features],
        "offsets": [[[-1, -1] if o is None else list(o) for o in f["offsets"]] for f in features],
    }
    if training:
        columns["start_position"] = [f["start_position"] for f in features]
        columns["end_position"] = [f["end_position"] for f in features]
    return pd.DataFrame(columns)


def prepare(config: Config, root: Path):
    from bertops.atomic import replace_dir, staging_dir
    from bertops.data.prepare import require_validated, sample_splits, token_stats, write_prepare_reports
    from bertops.lineage import files_sha256
    from bertops.models.pretrained import load_tokenizer

    examples, manifest = raw_examples(config, root)
    require_validated(config, root, manifest["data_hash"])
    prep = config.prepare
    rest, evals = split_by_article(examples, prep.eval_fraction, prep.seed)
    train, validation = split_by_article(rest, prep.validation_fraction, prep.seed + 1)
    splits = {"train": train, "validation": validation, "eval": evals}
    sample_splits(splits, prep)  # smoke runs
    tokenizer = load_tokenizer(config.finetune.model)
    out_dir = root / config.paths.prepared / config.ingest.dataset
    staging = staging_dir(out_dir)
    stats, windows = {}, {}
    for split in SPLITS:
        training = split == "train"
        features = build_features(
            tokenizer, splits[split], prep.max_length, prep.doc_stride, prep.max_query_length, training=training
        )
        _examples_frame(splits[split]).to_parquet(staging / f"{split}-examples.parquet", index=False)
        _features_frame(features, training).to_parquet(staging / f"{split}.parquet", index=False)
        stats[split] = token_stats([len(f["input_ids"]) for f in features], prep.max_length)
        windows[split] = len(features)
    (staging / "labels.json").write_text(json.dumps({"id2label": {}}) + "\n")
    files = [staging / f"{s}{suffix}.parquet" for s in SPLITS for suffix in ("", "-examples")]
    prepared_hash = files_sha256(files)
    articles = {split: len({e.title for e in splits[split]}) for split in SPLITS}
    (staging / "meta.json").write_text(
        json.dumps(
            {
                "dataset": config.ingest.dataset,
                "task": "qa",
                "data_hash": manifest["data_hash"],
                "prepared_hash": prepared_hash,
                "tokenizer": config.finetune.model,
                "max_length": prep.max_length,
                "doc_stride": prep.doc_stride,
                "max_query_length": prep.max_query_length,
                "windows": windows,
                "articles": articles,
            },
            indent=2,
        )
        + "\n"
    )
    replace_dir(staging, out_dir)
    return write_prepare_reports(
        config,
        root,
        out_dir,
        {split: splits[split] for split in SPLITS},
        stats,
        {"windows": windows, "articles": articles},
    )


def load_split(config: Config, root: Path, split: str) -> tuple[list[QAExample], pd.DataFrame]:
    folder = root / config.paths.prepared / config.ingest.dataset
    return examples_of(pd.read_parquet(folder / f"{split}-examples.parquet")), pd.read_parquet(
        folder / f"{split}.parquet"
    )
