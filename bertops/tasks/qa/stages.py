"""The pipeline stages for extractive question answering (`ingest.task: qa`, SQuAD v1.1 JSON).

validate: the file's structure (a broken one names where), then Great Expectations on a table of
  one row per question: the answer text is what the context holds at the answer's offset, question
  and context are not blank, every question has an answer, ids are unique; failures name the
  question id and article;
prepare: split by article (only SQuAD dev is available offline: eval = held-out articles, and
  checkpoint-selection questions are carved from the remaining articles the same way), then
  doc-stride windows of [CLS] question [SEP] context [SEP] with answer token positions;
finetune: the shared loop with a span head (start/end logits), checkpoint selection on SQuAD F1;
evaluate: exact match and F1 as the official v1.1 script, serving latency, champion comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

import bertops.tasks.qa.core as core
from bertops.config import Config
from bertops.data.batching import Batch, bucketed_batches, collate
from bertops.data.validation import Check, CorpusUnreadable, ValidationSuite
from bertops.evaluation.evaluate import Evaluation
from bertops.evaluation.gate import GateRules, required_floor
from bertops.tasks.base import Task
from bertops.tasks.qa.core import (
    QAExample,
    SquadFormatError,
    build_features,
    postprocess,
    read_squad,
    split_by_article,
    squad_scores,
)
from bertops.training.loop import TrainingSpec
from bertops.training.setup import autocast

SPLITS = ("train", "validation", "eval")


def raw_examples(config: Config, root: Path) -> tuple[list[QAExample], dict]:
    """Every question of the ingested SQuAD files (pooled; prepare splits them by article)."""
    from bertops.data.sources import raw_manifest

    out_dir, manifest = raw_manifest(config, root)
    return [e for name in manifest["files"].values() for e in read_squad(out_dir / name)], manifest


# -- validate ------------------------------------------------------------------------------------


def question_table(examples: list[QAExample]) -> pd.DataFrame:
    """One row per question; `answer_matches` is False when some answer's text is not the
    context's text at its offset (the row shows both)."""
    rows = []
    for example in examples:
        found = [example.context[start : start + len(text)] for text, start in example.answers]
        bad = [(text, got, start) for (text, start), got in zip(example.answers, found) if text != got]
        rows.append(
            {
                "id": example.id,
                "article": example.title,
                "question": example.question,
                "context_chars": len(example.context),
                "answers": len(example.answers),
                "context_blank": not example.context.strip(),
                "answer_matches": not bad,
                "answer_text": bad[0][0] if bad else (example.answers[0][0] if example.answers else None),
                "context_at_offset": bad[0][1] if bad else None,
                "answer_start": bad[0][2] if bad else (example.answers[0][1] if example.answers else None),
            }
        )
    return pd.DataFrame(rows)


def validation_suite(config: Config, root: Path) -> ValidationSuite:
    """GX checks on the question table; a file whose structure is broken fails naming where."""
    try:
        examples, manifest = raw_examples(config, root)
    except SquadFormatError as exc:
        raise CorpusUnreadable("SQuAD v1.1 structure (data -> paragraphs -> qas)", exc) from None
    table = "train"
    checks = [
        Check(
            table,
            "at least min_rows questions",
            "ExpectTableRowCountToBeBetween",
            {"min_value": config.validate_.min_rows},
        ),
        Check(table, "question ids are unique", "ExpectColumnValuesToBeUnique", {"column": "id"}),
        Check(table, "question is not blank", "ExpectColumnValuesToMatchRegex", {"column": "question", "regex": r"\S"}),
        Check(
            table,
            "context is not blank",
            "ExpectColumnValuesToBeInSet",
            {"column": "context_blank", "value_set": [False]},
        ),
        Check(
            table,
            "every question has an answer",
            "ExpectColumnValuesToBeBetween",
            {"column": "answers", "min_value": 1},
        ),
        Check(
            table,
            "answer text matches the context at answer_start",
            "ExpectColumnValuesToBeInSet",
            {"column": "answer_matches", "value_set": [True]},
        ),
    ]
    return ValidationSuite(
        checks,
        {table: question_table(examples)},
        ["id", "article", "answer_text", "context_at_offset", "answer_start", "question"],
        {table: len(examples)},
        manifest["data_hash"],
    )


# -- prepare -------------------------------------------------------------------------------------


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


def prepare_qa(config: Config, root: Path):
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


# -- finetune ------------------------------------------------------------------------------------


def collate_spans(sequences: list[list[int]], spans: list[tuple[int, int]], pad_id: int, sep_id: int | None) -> Batch:
    """Padded windows with segment ids (question 0, context 1) and (B, 2) start/end targets."""
    batch = collate(sequences, None, pad_id, sep_id)
    batch.labels = torch.as_tensor(spans, dtype=torch.long)
    return batch


@torch.no_grad()
def predict_spans(
    model,
    examples: list[QAExample],
    features: pd.DataFrame,
    pad_id: int,
    sep_id: int,
    batch_size: int,
    max_answer_tokens: int,
    device: torch.device,
    precision: str = "fp32",
) -> dict:
    """{question id: {"text", "start", "end", "score"}} over all of its windows."""
    was_training = model.training
    model.eval()
    sequences = features["input_ids"].map(list).tolist()
    starts: list = [None] * len(sequences)
    ends: list = [None] * len(sequences)
    for index in bucketed_batches([len(s) for s in sequences], batch_size, 1, seed=0, shuffle=False):
        batch = collate([sequences[i] for i in index], None, pad_id, sep_id).to(device)
        with autocast(device, precision):
            out = model(**batch.inputs())
        for row, i in enumerate(index):
            starts[i] = out.start_logits[row].float().cpu().numpy()
            ends[i] = out.end_logits[row].float().cpu().numpy()
    model.train(was_training)
    windows = [
        {"example_index": int(e), "offsets": [None if o[0] < 0 else (int(o[0]), int(o[1])) for o in offsets]}
        for e, offsets in zip(features["example_index"], features["offsets"])
    ]
    return postprocess(examples, windows, starts, ends, max_answer_length=max_answer_tokens)


def training_spec(config: Config, root: Path) -> TrainingSpec:
    """The shared loop with a span head (start/end logits), selected on validation SQuAD F1."""
    from transformers import AutoModelForQuestionAnswering

    from bertops.models.pretrained import describe_model_source, load_tokenizer, resolve_model_source

    cfg = config.finetune
    tokenizer = load_tokenizer(cfg.model)
    validation_examples, _ = load_split(config, root, "validation")

    def build(_):
        return AutoModelForQuestionAnswering.from_pretrained(
            resolve_model_source(cfg.model), hidden_dropout_prob=cfg.dropout, attn_implementation="sdpa"
        )

    def loss(model, batch: Batch, index) -> torch.Tensor:
        return model(**batch.inputs(), start_positions=batch.labels[:, 0], end_positions=batch.labels[:, 1]).loss

    def score(model, frame: pd.DataFrame, device: torch.device, precision: str) -> float:
        predicted = predict_spans(
            model,
            validation_examples,
            frame,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            config.evaluate.batch_size,
            config.evaluate.max_answer_tokens,
            device,
            precision,
        )
        return squad_scores({k: v["text"] for k, v in predicted.items()}, validation_examples)["f1"] / 100

    return TrainingSpec(
        stage="finetune",
        section=cfg,
        build=build,
        tokenizer=cfg.model,
        parent=describe_model_source(cfg.model),
        out_dir=root / config.paths.models / config.ingest.dataset,
        lineage={"task": "qa"},
        loss=loss,
        targets=lambda frame: list(zip(frame["start_position"].tolist(), frame["end_position"].tolist())),
        collate=collate_spans,
        score=score,
        metric="squad_f1",
    )


# -- evaluate ------------------------------------------------------------------------------------


def load_reader(model_dir: Path, device: str = "cpu"):
    from transformers import AutoModelForQuestionAnswering

    from bertops.models.classifier import load_model_folder

    return load_model_folder(model_dir, AutoModelForQuestionAnswering, device)


def answer_request(model, tokenizer, config: Config):
    """One /answer request as the endpoint serves it: (question, context) -> best span."""
    prep = config.prepare

    def request(item: tuple[str, str]) -> dict:
        example = QAExample("q", "", item[1], item[0], [])
        features = build_features(tokenizer, [example], prep.max_length, prep.doc_stride, prep.max_query_length, False)
        frame = pd.DataFrame(
            {
                "input_ids": [f["input_ids"] for f in features],
                "example_index": [0] * len(features),
                "offsets": [[[-1, -1] if o is None else list(o) for o in f["offsets"]] for f in features],
            }
        )
        return predict_spans(
            model,
            [example],
            frame,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            8,
            config.evaluate.max_answer_tokens,
            torch.device("cpu"),
        )["q"]

    return request


def evaluate(config: Config, root: Path) -> Evaluation:
    """Exact match and F1 (official v1.1 normalisation), serving latency, the production reader re-scored."""
    from bertops.data.prepare import load_prepared
    from bertops.evaluation.serving_cost import latency_profile, model_size_mb
    from bertops.models.classifier import checked_candidate

    _, _, meta = load_prepared(config, root)
    model_dir, lineage = checked_candidate(config, root, meta.get("prepared_hash"))
    examples, features = load_split(config, root, "eval")

    def scores_of(model, tokenizer) -> dict:
        predicted = predict_spans(
            model,
            examples,
            features,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            config.evaluate.batch_size,
            config.evaluate.max_answer_tokens,
            torch.device("cpu"),
        )
        return squad_scores({k: v["text"] for k, v in predicted.items()}, examples)

    model, tokenizer = load_reader(model_dir)
    scores = scores_of(model, tokenizer)
    requests = [(e.question, e.context) for e in examples[:50]]
    metrics = {
        "task": "qa",
        "examples": len(examples),
        "articles": meta["articles"]["eval"],
        "exact_match": round(scores["exact_match"] / 100, 4),
        "f1": round(scores["f1"] / 100, 4),
        "model_sha256": lineage["model_sha256"],
        "model_dir": str(model_dir),
        "serving": {
            "model_size_mb": model_size_mb(model_dir),
            "latency": latency_profile(
                answer_request(model, tokenizer, config), requests, config.evaluate.latency_requests
            ),
        },
        "champion": None,
    }
    from bertops.packaging import production_model

    found = production_model(config, root)
    if found is not None:
        version, path = found
        champion = scores_of(*load_reader(path))
        metrics["champion"] = {
            "version": version,
            "f1": round(champion["f1"] / 100, 4),
            "exact_match": round(champion["exact_match"] / 100, 4),
        }
    lat = metrics["serving"]["latency"]
    summary = (
        f"## Extractive QA on {metrics['examples']} questions of {metrics['articles']} held-out articles\n\n"
        f"exact match **{metrics['exact_match']:.4f}**, F1 **{metrics['f1']:.4f}** (official SQuAD v1.1 "
        f"normalisation)\n\nServing cost: {metrics['serving']['model_size_mb']} MB; one /answer request p50 "
        f"{lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms\n"
    )
    return Evaluation(metrics, metrics, summary)


class QuestionAnsweringTask(Task):
    name = "qa"
    service = "service:QuestionAnswering"
    route = "/answer"

    def validation_suite(self, config: Config, root: Path) -> ValidationSuite:
        return validation_suite(config, root)

    def prepare(self, config: Config, root: Path):
        return prepare_qa(config, root)

    def training_spec(self, config: Config, root: Path) -> TrainingSpec:
        return training_spec(config, root)

    def evaluate(self, config: Config, root: Path) -> Evaluation:
        return evaluate(config, root)

    def gate_rules(self, policy) -> GateRules:
        floor = required_floor(policy.min_qa_f1, "min_qa_f1", "SQuAD F1")
        return GateRules((("SQuAD F1", "f1", floor, ">="),), paired=False, champion_metric=("SQuAD F1", "f1"))

    def serving_settings(self, config: Config) -> dict:
        return {
            "doc_stride": config.prepare.doc_stride,
            "max_query_length": config.prepare.max_query_length,
            "max_answer_tokens": config.evaluate.max_answer_tokens,
        }

    def bento_files(self) -> dict[str, Path]:
        return {"bertops_qa_core.py": Path(core.__file__)}
