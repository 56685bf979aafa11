"""Extractive question answering (SQuAD v1.1), the pure core: read and validate the corpus, split
it by article, cut question+context into overlapping token windows, turn start/end logits back
into answer spans, and score them exactly as the official v1.1 evaluation script does.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_REPORTED_PROBLEMS = 20


class SquadFormatError(ValueError):
    """The file is not SQuAD v1.1 JSON (data -> paragraphs -> qas); the message names where."""


@dataclass
class QAExample:
    id: str
    title: str
    context: str
    question: str
    answers: list[tuple[str, int]] = field(default_factory=list)  # (text, character start in context)


# --- reading and validation -----------------------------------------------------------------


def _get(obj: object, key: str, kind: type, where: str):
    """obj[key] checked to be a `kind`; a SquadFormatError naming `where` otherwise."""
    if not isinstance(obj, dict):
        raise SquadFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise SquadFormatError(f"{where}: missing key {key!r}; SQuAD v1.1 needs data -> paragraphs -> qas")
    value = obj[key]
    # bool is an int subclass, but `"answer_start": true` is a broken file, not offset 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SquadFormatError(f"{where}: {key!r} must be {kind.__name__}, got {type(value).__name__} ({value!r:.60})")
    return value


def read_squad(path: Path) -> list[QAExample]:
    """Every question of a SQuAD v1.1 JSON file, in file order. Structure only: whether answers
    match their contexts is `validate_examples`' job, so one bad row does not hide the others."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SQuAD file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SquadFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    examples = []
    for a, article in enumerate(_get(document, "data", list, str(path))):
        title = _get(article, "title", str, f"{path}: data[{a}]")
        for p, paragraph in enumerate(_get(article, "paragraphs", list, f"{path}: article {title!r}")):
            where = f"{path}: article {title!r} paragraph {p}"
            context = _get(paragraph, "context", str, where)
            for q, qa in enumerate(_get(paragraph, "qas", list, where)):
                qid = _get(qa, "id", str, f"{where} qas[{q}]")
                at = f"{path}: question {qid!r} (article {title!r})"
                answers = [
                    (_get(ans, "text", str, f"{at} answer {i}"), _get(ans, "answer_start", int, f"{at} answer {i}"))
                    for i, ans in enumerate(_get(qa, "answers", list, at))
                ]
                examples.append(QAExample(qid, title, context, _get(qa, "question", str, at), answers))
    return examples


def _answer_problem(example: QAExample, number: int, text: str, start: int) -> str | None:
    """What is wrong with one gold answer, with the fix; None when it matches the context."""
    context = example.context
    if not text.strip():
        return f"answer {number} is empty; give the answer text or drop the answer"
    if start < 0 or start + len(text) > len(context):
        where = context.find(text)
        hint = f"the text occurs at {where}" if where >= 0 else "the text does not occur in the context at all"
        return (
            f"answer {number} ({text!r}) at answer_start {start} runs outside the context "
            f"({len(context)} characters); {hint}"
        )
    found = context[start : start + len(text)]
    if found != text:
        where = context.find(text)
        hint = (
            f"set answer_start to {where}, where the text occurs"
            if where >= 0
            else "the text does not occur in the context at all; fix the answer text"
        )
        return (
            f"answer {number} text {text!r} does not match the context at answer_start {start}, "
            f"which reads {found!r}; {hint}"
        )
    return None


def validate_examples(examples: list[QAExample], source: str, limit: int = MAX_REPORTED_PROBLEMS) -> list[str]:
    """One readable problem per bad row (question id, article, what and how to fix); empty when
    the corpus is clean. At most `limit` problems, then one line counting the rest."""
    problems = []
    first_seen: dict[str, str] = {}
    for example in examples:
        row = f"{source}: question {example.id!r} (article {example.title!r})"
        if example.id in first_seen:
            problems.append(
                f"{row}: duplicate id, first seen in article {first_seen[example.id]!r}; "
                "ids must be unique, rename or drop one"
            )
            continue
        first_seen[example.id] = example.title
        if not example.question.strip():
            problems.append(f"{row}: empty question; write the question or drop the row")
        if not example.context.strip():
            problems.append(f"{row}: empty context; the paragraph needs its text")
            continue
        if not example.answers:
            problems.append(
                f"{row}: no answers; SQuAD v1.1 needs at least one (unanswerable v2.0 rows are not supported)"
            )
        for number, (text, start) in enumerate(example.answers, 1):
            problem = _answer_problem(example, number, text, start)
            if problem:
                problems.append(f"{row}: {problem}")
    if len(problems) > limit:
        rest = len(problems) - limit
        problems = problems[:limit] + [
            f"{source}: ... and {rest} more problems (fix the ones above and validate again)"
        ]
    return problems


def split_by_article(
    examples: list[QAExample], eval_fraction: float, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """(train, eval) with whole articles on one side, so eval questions never share a paragraph
    with training ones. Articles are shuffled by `seed`; eval takes the prefix of that order whose
    question count is nearest to `eval_fraction` of all questions (at least one article each side)."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction}: must be strictly between 0 and 1 (e.g. 0.1)")
    counts = Counter(example.title for example in examples)
    if len(counts) < 2:
        raise ValueError(f"cannot split by article: the examples hold {len(counts)} article(s); need at least 2")
    titles = sorted(counts)  # sorted first so the split does not depend on input order
    order = [titles[i] for i in np.random.default_rng(seed).permutation(len(titles))]
    cumulative = np.cumsum([counts[t] for t in order])
    target = eval_fraction * len(examples)
    cut = int(np.argmin(np.abs(cumulative[:-1] - target))) + 1  # 1..len-1 articles go to eval
    eval_titles = set(order[:cut])
    train = [e for e in examples if e.title not in eval_titles]
    held_out = [e for e in examples if e.title in eval_titles]
    return train, held_out


# --- features -------------------------------------------------------------------------------


def _truncate_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    """Questions cut at the end of their `max_query_length`-th token (cut on a token boundary, so
    re-tokenising the prefix gives exactly those tokens). Leading spaces go: they waste no token
    but some SQuAD questions have huge runs of them that break offset bookkeeping."""
    questions = [q.lstrip() for q in questions]
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [
        q[: offsets[max_query_length - 1][1]] if len(offsets) > max_query_length else q
        for q, offsets in zip(questions, encoded["offset_mapping"])
    ]


def _answer_tokens(offsets: list[tuple[int, int] | None], start_char: int, end_char: int) -> tuple[int, int]:
    """Token indices of the answer chars [start_char, end_char) in one window; (0, 0) ([CLS]) when
    the answer is not wholly inside the window's context tokens."""
    context = [(i, span) for i, span in enumerate(offsets) if span is not None]
    if not context:
        return 0, 0
    if context[0][1][0] > start_char or context[-1][1][1] < end_char:
        return 0, 0
    # First token ending after the answer starts; last token starting before it ends. Unlike
    # "token containing start_char", this also lands right when an offset falls on a space.
    start = next(i for i, span in context if span[1] > start_char)
    end = next(i for i, span in reversed(context) if span[0] < end_char)
    return start, end


def build_features(
    tokenizer, examples: list[QAExample], max_length: int, doc_stride: int, max_query_length: int, training: bool
) -> list[dict]:
    """Token windows of question+context, unpadded (the collator pads). Contexts too long for one
    window are split into windows sharing `doc_stride` context tokens (Hugging Face's `stride`, i.e.
    the overlap, not the step). Each feature: input_ids, token_type_ids, example_index, offsets
    (char span per context token, None elsewhere); when training, start/end_position of the first
    answer, both 0 ([CLS]) where the answer is not wholly in the window."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("build_features needs a fast (Rust) tokenizer for offset mappings; load it with use_fast=True")
    if max_length > tokenizer.model_max_length:
        raise ValueError(
            f"max_length={max_length} exceeds the model's {tokenizer.model_max_length} positions; lower it"
        )
    room = max_length - max_query_length - 3  # [CLS] question [SEP] context [SEP]
    if room <= doc_stride:
        raise ValueError(
            f"max_length={max_length} leaves {room} context tokens after a {max_query_length}-token question and 3 "
            f"special tokens, but doc_stride={doc_stride} must be smaller than that; raise max_length or lower "
            "doc_stride / max_query_length (e.g. 384 / 128 / 64)"
        )
    if training:
        unanswered = [e.id for e in examples if not e.answers]
        if unanswered:
            raise ValueError(
                f"training features need an answer per question; {len(unanswered)} have none "
                f"(first: {unanswered[0]!r}). Run validate_examples and fix or drop them"
            )

    features = []
    chunk = 1000  # bounds the memory of one tokenizer call on a large corpus
    for begin in range(0, len(examples), chunk):
        batch = examples[begin : begin + chunk]
        questions = _truncate_questions(tokenizer, [e.question for e in batch], max_query_length)
        encoded = tokenizer(
            questions,
            [e.context for e in batch],
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
        for i, local_index in enumerate(encoded["overflow_to_sample_mapping"]):
            sequence_ids = encoded.sequence_ids(i)
            offsets = [
                tuple(span) if sid == 1 else None for span, sid in zip(encoded["offset_mapping"][i], sequence_ids)
            ]
            feature = {
                "input_ids": encoded["input_ids"][i],
                "token_type_ids": encoded["token_type_ids"][i],
                "example_index": begin + local_index,
                "offsets": offsets,
            }
            if training:
                text, start_char = batch[local_index].answers[0]
                start, end = _answer_tokens(offsets, start_char, start_char + len(text))
                feature["start_position"], feature["end_position"] = start, end
            features.append(feature)
    return features


# --- from logits to answers -----------------------------------------------------------------


def _window_candidates(
    offsets: list, start_logits: np.ndarray, end_logits: np.ndarray, n_best: int, max_answer_length: int
) -> list[tuple[float, int, int]]:
    """(start+end logit, start char, end char) for this window's best valid spans."""
    in_context = np.array([span is not None for span in offsets])
    if not in_context.any():
        return []
    start = np.where(in_context, start_logits[: len(offsets)], -np.inf)
    end = np.where(in_context, end_logits[: len(offsets)], -np.inf)
    k = min(n_best, int(in_context.sum()))
    starts, ends = np.argsort(-start, kind="stable")[:k], np.argsort(-end, kind="stable")[:k]
    return [
        (float(start[s] + end[e]), offsets[s][0], offsets[e][1])
        for s in starts
        for e in ends
        if s <= e and e - s + 1 <= max_answer_length
    ]


def postprocess(
    examples: list[QAExample],
    features: list[dict],
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, dict]:
    """Per example id the best span over all its windows: {"text", "start", "end" (char, end
    exclusive, so context[start:end] == text), "score"}.

    Candidates are the top `n_best` starts x top `n_best` ends of each window, kept when both are
    context tokens, start <= end and the span is at most `max_answer_length` tokens. A span seen in
    two overlapping windows counts once, with its higher logit sum. `score` is the softmax of the
    best candidate's start+end logit sum over the `n_best` best distinct candidates (as in the
    original BERT n-best output): in [0, 1], higher means less contested, but it is relative to the
    other candidates, not a calibrated probability of being right. An example with no valid
    candidate (e.g. an empty context) gets text "" and score 0.0.
    """
    if not len(features) == len(start_logits) == len(end_logits):
        raise ValueError(
            f"{len(features)} features but {len(start_logits)} start and {len(end_logits)} end logit "
            "rows; pass one row per feature, in feature order"
        )
    by_example: dict[int, list[int]] = defaultdict(list)
    for f, feature in enumerate(features):
        index = feature["example_index"]
        if not 0 <= index < len(examples):
            raise ValueError(
                f"feature {f} points at example {index}, but only {len(examples)} examples were given; "
                "build features and postprocess from the same example list"
            )
        by_example[index].append(f)

    predictions = {}
    for index, example in enumerate(examples):
        if index not in by_example:
            raise ValueError(f"question {example.id!r} has no features; build features from these same examples")
        best_sum: dict[tuple[int, int], float] = {}
        for f in by_example[index]:
            offsets = features[f]["offsets"]
            s_logits, e_logits = np.asarray(start_logits[f]), np.asarray(end_logits[f])
            if len(s_logits) < len(offsets) or len(e_logits) < len(offsets):
                raise ValueError(
                    f"feature {f} has {len(offsets)} tokens but logits of length {len(s_logits)}/"
                    f"{len(e_logits)}; the logits must cover every token (padding beyond is ignored)"
                )
            for total, start, end in _window_candidates(offsets, s_logits, e_logits, n_best, max_answer_length):
                if total > best_sum.get((start, end), -np.inf):
                    best_sum[(start, end)] = total
        if not best_sum:
            predictions[example.id] = {"text": "", "start": 0, "end": 0, "score": 0.0}
            continue
        ranked = sorted(best_sum.items(), key=lambda item: -item[1])[:n_best]
        sums = np.array([total for _, total in ranked])
        probs = np.exp(sums - sums.max())
        (start, end), _ = ranked[0]
        predictions[example.id] = {
            "text": example.context[start:end],
            "start": start,
            "end": end,
            "score": float(probs[0] / probs.sum()),
        }
    return predictions


# --- official SQuAD v1.1 metrics ------------------------------------------------------------

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official v1.1 normalisation: lowercase, drop ASCII punctuation, articles and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_f1(prediction: str, truth: str) -> float:
    """Token-overlap F1 of normalised answers, in [0, 1]."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_scores(predictions: dict[str, str], examples: list[QAExample]) -> dict:
    """Exact match and F1 in percent, each the max over an example's gold answers, averaged over
    all examples; as in the official script an example with no prediction scores 0 (counted in
    "unanswered") and predictions for unknown ids are ignored."""
    unscorable = [e.id for e in examples if not e.answers]
    if unscorable:
        raise ValueError(
            f"{len(unscorable)} questions have no gold answers (first: {unscorable[0]!r}); "
            "run validate_examples and fix or drop them before scoring"
        )
    if not examples:
        raise ValueError("no examples to score")
    exact = f1 = 0.0
    unanswered = 0
    for example in examples:
        if example.id not in predictions:
            unanswered += 1
            continue
        prediction = predictions[example.id]
        exact += max(answer_exact_match(prediction, text) for text, _ in example.answers)
        f1 += max(answer_f1(prediction, text) for text, _ in example.answers)
    return {
        "exact_match": 100.0 * exact / len(examples),
        "f1": 100.0 * f1 / len(examples),
        "examples": len(examples),
        "unanswered": unanswered,
    }
