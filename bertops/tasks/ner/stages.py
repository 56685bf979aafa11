"""The pipeline stages for token classification (`ingest.task: ner`, CoNLL-2003 IOB2 tags).

validate: the CoNLL files are parsed (a row with the wrong number of columns is an error naming
  its line) and checked with Great Expectations on a table of one row per token (tag inside the
  declared label set, IOB2 order, no blank token), each failure naming file lines;
prepare: sentences -> word pieces with each word's label on its first piece (-100 elsewhere);
  train / validation / eval from the source's train / valid / test files;
finetune: the shared training loop with a token-classification head, labels padded with -100,
  checkpoint selection on validation entity F1;
evaluate: entity-level precision / recall / F1 (seqeval semantics) overall and per type, the
  serving cost, and the production model re-scored on the same sentences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bertops.tasks.ner.core as core
from bertops.config import Config, ConfigError
from bertops.data.batching import Batch, bucketed_batches
from bertops.data.validation import Check, CheckResult, CorpusUnreadable, ValidationSuite
from bertops.evaluation.evaluate import Evaluation
from bertops.evaluation.gate import GateRules, required_floor
from bertops.tasks.base import Task
from bertops.tasks.ner.core import (
    IGNORE_INDEX,
    OUTSIDE,
    ConllFormatError,
    Sentence,
    encode,
    entity_scores,
    read_conll,
    word_predictions,
)
from bertops.training.loop import TrainingSpec
from bertops.training.setup import autocast

SPLITS = ("train", "validation", "eval")


def raw_sentences(config: Config, root: Path) -> tuple[dict[str, list[Sentence]], dict]:
    """The ingested CoNLL files, parsed per split, and the ingest manifest."""
    from bertops.data.sources import raw_manifest

    out_dir, manifest = raw_manifest(config, root)
    return {split: read_conll(out_dir / name) for split, name in manifest["files"].items()}, manifest


def declared_tags(config: Config) -> list[str]:
    """The tag set from `ingest.labels` ("O" first: label id 0 is "no entity")."""
    tags = list(config.ingest.labels.values())
    if OUTSIDE not in tags:
        raise ConfigError(f"ingest.labels for ner must include {OUTSIDE!r} (outside any entity); got {tags}")
    return [OUTSIDE] + [t for t in tags if t != OUTSIDE]


# -- validate ------------------------------------------------------------------------------------


def token_table(sentences: list[Sentence]) -> pd.DataFrame:
    """One row per token, indexed by (file line - 1) so a failure's "row" is the file's line."""
    rows, index = [], []
    for sentence in sentences:
        previous = None
        for offset, (token, tag) in enumerate(zip(sentence.tokens, sentence.tags)):
            kind = tag[2:] if tag[:2] in ("B-", "I-") else None
            iob2 = not tag.startswith("I-") or (
                previous is not None and previous[2:] == kind and previous[:2] in ("B-", "I-")
            )
            rows.append(
                {
                    "line": sentence.line + offset,
                    "token": token,
                    "tag": tag,
                    "previous_tag": previous or "(sentence start)",
                    "iob2_ok": iob2,
                }
            )
            index.append(sentence.line + offset - 1)
            previous = tag
    return pd.DataFrame(rows, index=index, columns=["line", "token", "tag", "previous_tag", "iob2_ok"])


def validation_suite(config: Config, root: Path) -> ValidationSuite:
    """GX checks per split on the token table; a file that cannot be parsed fails with its line."""
    try:
        splits, manifest = raw_sentences(config, root)
    except ConllFormatError as exc:  # a row with the wrong number of columns: named by file and line
        raise CorpusUnreadable("CoNLL rows have the same number of columns", exc) from None
    tags = declared_tags(config)
    checks, tables = [], {}
    for split, sentences in splits.items():
        tables[split] = token_table(sentences)
        checks += [
            Check(
                split,
                "tags inside the declared tag set",
                "ExpectColumnValuesToBeInSet",
                {"column": "tag", "value_set": tags},
            ),
            Check(
                split,
                "IOB2: an I-X tag follows B-X or I-X",
                "ExpectColumnValuesToBeInSet",
                {"column": "iob2_ok", "value_set": [True]},
            ),
            Check(split, "tokens are not blank", "ExpectColumnValuesToMatchRegex", {"column": "token", "regex": r"\S"}),
        ]
    # GX sees token rows; the size rule is about sentences
    sizes = [
        CheckResult(
            split,
            "at least min_rows sentences",
            "sentence count",
            len(sentences) >= config.validate_.min_rows,
            observed=len(sentences),
        )
        for split, sentences in splits.items()
    ]
    return ValidationSuite(
        checks,
        tables,
        ["line", "token", "tag", "previous_tag"],
        {split: len(sentences) for split, sentences in splits.items()},
        manifest["data_hash"],
        sizes,
    )


# -- prepare -------------------------------------------------------------------------------------


def prepare_ner(config: Config, root: Path):
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


# -- finetune ------------------------------------------------------------------------------------


def collate_tokens(
    sequences: list[list[int]], labels: list[list[int]], pad_id: int, sep_id: int | None = None
) -> Batch:
    """Pad ids with pad_id and per-piece labels with -100 (ignored by the loss)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    targets = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    for row, (seq, lab) in enumerate(zip(sequences, labels)):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        targets[row, : len(lab)] = torch.as_tensor(lab, dtype=torch.long)
    return Batch(ids, mask, targets)


@torch.no_grad()
def predict_tags(
    model,
    frame: pd.DataFrame,
    id2label: dict[int, str],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> list[list[str]]:
    """One predicted tag per word of each sentence (read at the word's first piece)."""
    was_training = model.training
    model.eval()
    sequences = frame["input_ids"].map(list).tolist()
    word_ids = [[None if w < 0 else int(w) for w in row] for row in frame["word_ids"]]
    out: list[list[str]] = [[] for _ in sequences]
    for index in bucketed_batches([len(s) for s in sequences], batch_size, 1, seed=0, shuffle=False):
        batch = collate_tokens([sequences[i] for i in index], [[] for _ in index], pad_id).to(device)
        with autocast(device, precision):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float().cpu().numpy()
        for row, i in enumerate(index):
            ids = word_predictions(logits[row], word_ids[i], num_words=len(frame["tokens"].iloc[i]))
            out[i] = [id2label[k] for k in ids]
    model.train(was_training)
    return out


def training_spec(config: Config, root: Path) -> TrainingSpec:
    """The shared loop (checkpoints, Ray, bucketing) with a token-classification head."""
    from transformers import AutoModelForTokenClassification

    from bertops.models.pretrained import describe_model_source, resolve_model_source

    cfg = config.finetune
    tokenizer_pad = {}

    def build(id2label: dict[int, str]):
        return AutoModelForTokenClassification.from_pretrained(
            resolve_model_source(cfg.model),
            num_labels=len(id2label),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            hidden_dropout_prob=cfg.dropout,
            attn_implementation="sdpa",
        )

    def score(model, frame: pd.DataFrame, device: torch.device, precision: str) -> float:
        if "pad" not in tokenizer_pad:
            from bertops.models.pretrained import load_tokenizer

            tokenizer_pad["pad"] = load_tokenizer(cfg.model).pad_token_id
        id2label = model.config.id2label
        predicted = predict_tags(
            model, frame, id2label, tokenizer_pad["pad"], config.evaluate.batch_size, device, precision
        )
        return entity_scores(frame["tags"].map(list).tolist(), predicted)["f1"]

    return TrainingSpec(
        stage="finetune",
        section=cfg,
        build=build,
        tokenizer=cfg.model,
        parent=describe_model_source(cfg.model),
        out_dir=root / config.paths.models / config.ingest.dataset,
        lineage={"task": "ner"},
        targets=lambda frame: frame["labels"].map(list).tolist(),
        collate=collate_tokens,
        score=score,
        metric="entity_f1",
    )


# -- evaluate ------------------------------------------------------------------------------------


def load_tagger(model_dir: Path, device: str = "cpu"):
    from transformers import AutoModelForTokenClassification

    from bertops.models.classifier import load_model_folder

    return load_model_folder(model_dir, AutoModelForTokenClassification, device)


def tag_request(model, tokenizer, max_length: int):
    """One /tag request as the endpoint serves it: raw text -> entities with character offsets."""
    from bertops.tasks.ner.core import spans_to_entities, split_words, word_scores

    def request(text: str) -> list[dict]:
        words = split_words(text)
        if not words:
            return []
        encoded = tokenizer(
            [[w for w, _, _ in words]],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[0].numpy()
        ids, scores = word_scores(logits, encoded.word_ids(0), num_words=len(words))
        return spans_to_entities(text, words, [model.config.id2label[i] for i in ids], scores)

    return request


def evaluate(config: Config, root: Path) -> Evaluation:
    """Entity P/R/F1 on the eval split (overall and per type), serving cost, champion comparison."""
    from bertops.data.prepare import load_prepared
    from bertops.evaluation.serving_cost import latency_profile, model_size_mb
    from bertops.models.classifier import checked_candidate

    frames, id2label, meta = load_prepared(config, root)
    model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
    model, tokenizer = load_tagger(model_dir)
    evals = frames["eval"]
    gold = evals["tags"].map(list).tolist()
    predicted = predict_tags(
        model, evals, model.config.id2label, tokenizer.pad_token_id, config.evaluate.batch_size, torch.device("cpu")
    )
    scores = entity_scores(gold, predicted)
    texts = [" ".join(tokens) for tokens in evals["tokens"].map(list)]
    request = tag_request(model, tokenizer, config.prepare.max_length)
    metrics = {
        "task": "ner",
        "examples": len(evals),
        "entity_f1": scores["f1"],
        "entity_precision": scores["precision"],
        "entity_recall": scores["recall"],
        "per_type": scores["per_type"],
        "model_sha256": lineage["model_sha256"],
        "model_dir": str(model_dir),
        "truncated_sentences": int(evals["truncated"].sum()),
        "serving": {
            "model_size_mb": model_size_mb(model_dir),
            "latency": latency_profile(request, texts, config.evaluate.latency_requests),
        },
        "champion": score_ner_champion(config, root, evals, gold, texts),
    }
    return Evaluation(metrics, metrics, markdown_summary(metrics))


def score_ner_champion(
    config: Config, root: Path, evals: pd.DataFrame, gold: list[list[str]], texts: list[str]
) -> dict | None:
    """The production tagger re-scored on the same sentences (and its serving latency)."""
    from bertops.evaluation.serving_cost import latency_profile
    from bertops.packaging import production_model

    found = production_model(config, root)
    if found is None:
        return None
    version, path = found
    model, tokenizer = load_tagger(path)
    predicted = predict_tags(
        model, evals, model.config.id2label, tokenizer.pad_token_id, config.evaluate.batch_size, torch.device("cpu")
    )
    latency = latency_profile(
        tag_request(model, tokenizer, config.prepare.max_length), texts, config.evaluate.latency_requests
    )
    return {"version": version, "entity_f1": entity_scores(gold, predicted)["f1"], "latency": latency}


def markdown_summary(metrics: dict) -> str:
    lines = [
        f"## Entity-level evaluation on {metrics['examples']} sentences",
        "",
        f"entity F1 **{metrics['entity_f1']:.4f}** (precision {metrics['entity_precision']:.4f}, recall "
        f"{metrics['entity_recall']:.4f}; seqeval/conlleval semantics)",
        "",
        "| type | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in sorted(metrics["per_type"].items()):
        lines.append(f"| {kind} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    lat = metrics["serving"]["latency"]
    lines += [
        "",
        f"Serving cost: {metrics['serving']['model_size_mb']} MB of weights; one /tag request p50 "
        f"{lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms",
    ]
    if metrics.get("champion"):
        lines.append(f"Production {metrics['champion']['version']}: entity F1 {metrics['champion']['entity_f1']:.4f}")
    return "\n".join(lines) + "\n"


class TokenClassificationTask(Task):
    name = "ner"
    service = "service:TokenTagging"
    route = "/tag"

    def validation_suite(self, config: Config, root: Path) -> ValidationSuite:
        return validation_suite(config, root)

    def prepare(self, config: Config, root: Path):
        return prepare_ner(config, root)

    def training_spec(self, config: Config, root: Path) -> TrainingSpec:
        return training_spec(config, root)

    def evaluate(self, config: Config, root: Path) -> Evaluation:
        return evaluate(config, root)

    def gate_rules(self, policy) -> GateRules:
        floor = required_floor(policy.min_entity_f1, "min_entity_f1", "entity F1")
        return GateRules(
            (("entity F1", "entity_f1", floor, ">="),), paired=False, champion_metric=("entity F1", "entity_f1")
        )

    def bento_files(self) -> dict[str, Path]:
        return {"bertops_ner_core.py": Path(core.__file__)}
