"""NER corpus -> word pieces with each word's label on its first piece (-100 elsewhere); train /
validation / eval from the source's train / valid / test files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bertops.config import Config
from bertops.tasks.ner.core import (
    encode,
)
from bertops.tasks.ner.validate import SPLITS, declared_tags, raw_sentences


def prepare(config: Config, root: Path):
    """CoNLL sentences -> word pieces + aligned labels, train / validation / eval parquet files."""

    from bertops.atomic import replace_dir, staging_dir
    from bertops.data.prepare import require_validated, sample_splits, token_stats, write_prepare_reports
    from bertops.data.sources import DataSourceError
    from bertops.lineage import files_sha256
    from bertops.models.pretrained import load_tokenizer

    splits, manifest = raw_sentences(config, root)
    require_validated(config, root, manifest["data_hash"])
    prep = config.prepare
    if "eval" not in splits:
        raise DataSourceError("a ner corpus needs an eval file (CoNLL-2003: test.txt); name it in ingest.files")
    if "validation" not in splits:  # carve checkpoint-selection sentences out of train
        rng = np.random.default_rng(prep.seed)
        order = rng.permutation(len(splits["train"]))
        cut = max(1, int(len(order) * prep.validation_fraction))
        splits["validation"] = [splits["train"][i] for i in sorted(order[:cut])]
        splits["train"] = [splits["train"][i] for i in sorted(order[cut:])]
    sample_splits(splits, prep)  # smoke runs

    tags = declared_tags(config)
    label2id = {tag: i for i, tag in enumerate(tags)}
    tokenizer = load_tokenizer(config.finetune.model)
    out_dir = root / config.paths.prepared / config.ingest.dataset
    staging = staging_dir(out_dir)
    stats, truncated = {}, {}
    for split in SPLITS:
        sentences = splits[split]
        features = encode(tokenizer, sentences, label2id, prep.max_length)
        frame = pd.DataFrame(
            {
                "tokens": [s.tokens for s in sentences],
                "tags": [s.tags for s in sentences],
                "line": [s.line for s in sentences],
                "input_ids": [f["input_ids"] for f in features],
                "labels": [f["labels"] for f in features],
                "word_ids": [[-1 if w is None else w for w in f["word_ids"]] for f in features],
                "truncated": [f["truncated"] for f in features],
            }
        )
        frame.to_parquet(staging / f"{split}.parquet", index=False)
        stats[split] = token_stats([len(ids) for ids in frame["input_ids"]], prep.max_length)
        truncated[split] = int(frame["truncated"].sum())
    (staging / "labels.json").write_text(json.dumps({"id2label": dict(enumerate(tags))}, indent=2) + "\n")
    prepared_hash = files_sha256([staging / f"{s}.parquet" for s in SPLITS] + [staging / "labels.json"])
    (staging / "meta.json").write_text(
        json.dumps(
            {
                "dataset": config.ingest.dataset,
                "task": "ner",
                "data_hash": manifest["data_hash"],
                "prepared_hash": prepared_hash,
                "tokenizer": config.finetune.model,
                "max_length": prep.max_length,
                "sentences_with_cut_words": truncated,
            },
            indent=2,
        )
        + "\n"
    )
    replace_dir(staging, out_dir)
    return write_prepare_reports(config, root, out_dir, {split: splits[split] for split in SPLITS}, stats, None)
