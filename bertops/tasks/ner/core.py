"""Token classification (NER, CoNLL-2003, IOB2 tags) as pure functions: read and check CoNLL
files, align word tags to word pieces, score entities the way seqeval/conlleval do, and turn
per-word predictions on raw text back into character-offset entities for serving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OUTSIDE = "O"
IGNORE_INDEX = -100  # what torch's cross-entropy skips: non-first pieces and special tokens
DOCSTART = "-DOCSTART-"
MAX_PROBLEMS = 20


class ConllFormatError(ValueError):
    """A CoNLL file that cannot be read as `token ... tag` rows."""


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    line: int  # 1-based line of the first token; token i sits on line + i


# --- reading and checking CoNLL files ---------------------------------------------------------


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_conll(path: Path, tag_column: int = -1) -> list[Sentence]:
    """Sentences of a CoNLL file: one `token ... tag` row per line, a blank line between sentences.

    Columns are separated by spaces or tabs; the first token row fixes how many there are (4 for
    CoNLL-2003's `token POS chunk NER`, 2 for `token tag`), and any row that differs is an error,
    because a shifted column silently turns POS tags into labels. `-DOCSTART-` rows are skipped.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise ConllFormatError(f"{path}:{bad_line}: not UTF-8 ({exc.reason}); re-encode the file as UTF-8") from exc

    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    columns = 0
    tag_index = 0

    def close() -> None:
        if tokens:
            sentences.append(Sentence(tokens=list(tokens), tags=list(tags), line=first_line))
            tokens.clear()
            tags.clear()

    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            close()
            continue
        if fields[0] == DOCSTART:
            close()  # a document boundary is a sentence boundary even without a blank line
            continue
        if not columns:
            columns = len(fields)
            if columns < 2:
                raise ConllFormatError(
                    f"{path}:{number}: {line.strip()!r} has 1 column; a CoNLL row needs at least a token "
                    "and a tag separated by a space, e.g. 'Paris B-LOC'"
                )
            if not -columns <= tag_column < columns or tag_column % columns == 0:
                raise ConllFormatError(
                    f"{path}: tag_column={tag_column} does not name a tag column in rows of {columns} columns "
                    f"(column 0 is the token); use 1..{columns - 1} or -1 for the last column"
                )
            tag_index = tag_column % columns
        elif len(fields) != columns:
            raise ConllFormatError(
                f"{path}:{number}: expected {columns} columns (as on the first token row) but found "
                f"{len(fields)} in {_shorten(line.strip())!r}; fix the row so every token row has the "
                "same columns, e.g. a token containing a space or a missing tag"
            )
        if not tokens:
            first_line = number
        tokens.append(fields[0])
        tags.append(fields[tag_index])
    close()
    return sentences


def _split_tag(tag: str) -> tuple[str, str] | None:
    """('B'|'I', type) for an IOB2 entity tag, None for anything else (including 'O')."""
    if len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
        return tag[0], tag[2:]
    return None


def _row_problems(token: str, tag: str, previous: str | None, known: set[str], labels_hint: str) -> list[str]:
    problems = []
    if not token.strip():
        problems.append("empty token; remove the row or give the token its text")
    if tag not in known:
        problems.append(f"unknown tag {tag!r}; use one of {labels_hint} or add it to the label list")
    parts = _split_tag(tag)
    if parts and parts[0] == "I":
        prev = _split_tag(previous) if previous is not None else None
        if prev is None or prev[1] != parts[1]:
            after = "the sentence start" if previous is None else repr(previous)
            problems.append(
                f"I-{parts[1]} without a preceding B-{parts[1]} (IOB2; it follows {after}); "
                f"tag the first word of the entity B-{parts[1]}"
            )
    return problems


def validate_sentences(
    sentences: list[Sentence], labels: list[str], source: str, max_problems: int = MAX_PROBLEMS
) -> list[str]:
    """One `source:line: what is wrong; how to fix it` message per bad row, empty when all is well.

    Capped at `max_problems` messages plus one line counting the rest: a file with a systematic
    error (e.g. IOB1 tags everywhere) would otherwise bury the first, most useful messages.
    """
    known = set(labels)
    hint = ", ".join(labels) if len(labels) <= 12 else ", ".join(labels[:12]) + ", ..."
    problems: list[str] = []
    if not sentences:
        problems.append(f"{source}: no sentences; the file has no token rows")
    for sentence in sentences:
        if len(sentence.tokens) != len(sentence.tags):
            problems.append(
                f"{source}:{sentence.line}: sentence has {len(sentence.tokens)} tokens but "
                f"{len(sentence.tags)} tags; give every token exactly one tag"
            )
        previous = None
        for offset, (token, tag) in enumerate(zip(sentence.tokens, sentence.tags)):
            found = _row_problems(token, tag, previous, known, hint)
            if found:
                problems.append(
                    f"{source}:{sentence.line + offset}: token {_shorten(token, 30)!r} tag {tag!r}: " + "; ".join(found)
                )
            previous = tag
    if len(problems) > max_problems:
        rest = len(problems) - max_problems
        problems = problems[:max_problems] + [f"{source}: ... and {rest} more problems (first {max_problems} shown)"]
    return problems


def label_list(sentences: list[Sentence]) -> list[str]:
    """'O', then B-/I- for each entity type in sorted order: the same ids for the same types every run."""
    types = set()
    for sentence in sentences:
        for offset, tag in enumerate(sentence.tags):
            if tag == OUTSIDE:
                continue
            parts = _split_tag(tag)
            if parts is None:
                raise ConllFormatError(
                    f"line {sentence.line + offset}: tag {tag!r} is not IOB2; use O, B-TYPE or I-TYPE"
                )
            types.add(parts[1])
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in sorted(types) for prefix in "BI"]


# --- aligning word tags to word pieces --------------------------------------------------------


def encode(tokenizer, sentences: list[Sentence], label2id: dict[str, int], max_length: int) -> list[dict]:
    """Word pieces per sentence, with each word's label on its first piece and -100 elsewhere.

    Only the first piece carries the label so that a word counts once in the loss and in the
    metrics, whatever the tokenizer does to it. `truncated` says some word lost its first piece to
    `max_length` and so has no label; `word_predictions` fills those words.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer; NER alignment needs word_ids(), "
            "which only fast (Rust) tokenizers provide: load it with use_fast=True"
        )
    minimum = tokenizer.num_special_tokens_to_add() + 1
    if max_length < minimum:
        raise ValueError(f"max_length={max_length} leaves no room for a word; use at least {minimum}")
    for sentence in sentences:
        if len(sentence.tokens) != len(sentence.tags):
            raise ValueError(
                f"line {sentence.line}: {len(sentence.tokens)} tokens but {len(sentence.tags)} tags; "
                "run validate_sentences first"
            )
    if not sentences:
        return []
    batch = tokenizer([s.tokens for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    encoded = []
    for i, sentence in enumerate(sentences):
        word_ids = batch.word_ids(i)
        labels = []
        previous = None
        for word in word_ids:
            if word is None or word == previous:
                labels.append(IGNORE_INDEX)
            else:
                tag = sentence.tags[word]
                if tag not in label2id:
                    raise ValueError(
                        f"line {sentence.line + word}: tag {tag!r} is not in label2id "
                        f"({', '.join(label2id)}); run validate_sentences first"
                    )
                labels.append(label2id[tag])
            previous = word
        present = {w for w in word_ids if w is not None}
        cut = {w for extra in batch.encodings[i].overflowing for w in extra.word_ids if w is not None}
        encoded.append(
            {
                "input_ids": list(batch["input_ids"][i]),
                "labels": labels,
                "word_ids": list(word_ids),
                "truncated": bool(cut - present),
            }
        )
    return encoded


def _first_pieces(word_ids: list[int | None], num_words: int | None) -> list[int | None]:
    """Index of each word's first piece, None for a word with no piece (cut by truncation)."""
    seen = [w for w in word_ids if w is not None]
    count = num_words if num_words is not None else (max(seen) + 1 if seen else 0)
    first: list[int | None] = [None] * count
    for position, word in enumerate(word_ids):
        if word is not None and word < count and first[word] is None:
            first[word] = position
    return first


def _piece_array(values, word_ids: list[int | None]) -> np.ndarray:
    array = np.asarray(values)
    # Padded batches give more positions than word_ids; the extra ones are padding and unused.
    if array.ndim not in (1, 2) or len(array) < len(word_ids):
        raise ValueError(
            f"expected one label id or one logits row per piece ({len(word_ids)} pieces), got shape {array.shape}"
        )
    return array


def word_predictions(values, word_ids: list[int | None], num_words: int | None = None, fill: int = 0) -> list[int]:
    """One label id per word, read at the word's first piece.

    `values` is (pieces,) label ids or (pieces, num_labels) logits. Words with no piece get
    `fill` (0 is 'O' in `label_list` order), so a truncated word scores as "no entity".
    """
    array = _piece_array(values, word_ids)
    ids = array.argmax(axis=-1) if array.ndim == 2 else array
    return [int(ids[p]) if p is not None else fill for p in _first_pieces(word_ids, num_words)]


def word_scores(
    logits, word_ids: list[int | None], num_words: int | None = None, fill: int = 0
) -> tuple[list[int], list[float]]:
    """Per word: the predicted label id and its softmax probability, both at the first piece."""
    array = _piece_array(logits, word_ids)
    if array.ndim != 2:
        raise ValueError(f"word_scores needs (pieces, num_labels) logits, got shape {array.shape}")
    shifted = array - array.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    ids, scores = [], []
    for p in _first_pieces(word_ids, num_words):
        ids.append(int(probs[p].argmax()) if p is not None else fill)
        scores.append(float(probs[p].max()) if p is not None else 0.0)
    return ids, scores


# --- entity metrics (seqeval default mode, as conlleval) -------------------------------------


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end-exclusive) spans in IOB2 tags, read as conlleval does.

    An entity starts at B-X, or at I-X that does not continue an X entity (after O or another
    type); it runs while I-X follows. This is seqeval's default (non-strict) mode.
    """
    spans = []
    kind, start = None, 0
    for i, tag in enumerate(tags):
        if tag == OUTSIDE:
            parts = None
        else:
            parts = _split_tag(tag)
            if parts is None:
                raise ValueError(f"tag {tag!r} at position {i} is not IOB2; use O, B-TYPE or I-TYPE")
        if kind is not None and (parts is None or parts[0] == "B" or parts[1] != kind):
            spans.append((kind, start, i))
            kind = None
        if parts is not None and kind is None:
            kind, start = parts[1], i
    if kind is not None:
        spans.append((kind, start, len(tags)))
    return spans


def _prf(correct: int, predicted: int, actual: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Micro and per-type entity precision/recall/F1: an entity counts only if type and span match.

    The numbers equal seqeval's `classification_report` (default mode): per-type rows cover every
    type seen in gold or predictions; undefined ratios are 0.0.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted; score the same sentences")
    gold_spans: set[tuple[int, str, int, int]] = set()
    pred_spans: set[tuple[int, str, int, int]] = set()
    for n, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {n}: {len(g)} gold tags but {len(p)} predicted; predict one tag per word")
        gold_spans.update((n, *span) for span in entities(g))
        pred_spans.update((n, *span) for span in entities(p))
    correct = gold_spans & pred_spans
    per_type = {}
    for kind in sorted({s[1] for s in gold_spans | pred_spans}):
        actual = sum(s[1] == kind for s in gold_spans)
        row = _prf(sum(s[1] == kind for s in correct), sum(s[1] == kind for s in pred_spans), actual)
        per_type[kind] = {**row, "support": actual}
    return {
        **_prf(len(correct), len(pred_spans), len(gold_spans)),
        "macro_f1": float(np.mean([r["f1"] for r in per_type.values()])) if per_type else 0.0,
        "support": len(gold_spans),
        "predicted": len(pred_spans),
        "per_type": per_type,
    }


# --- serving: raw text in, character-offset entities out --------------------------------------

# CoNLL-2003 (Reuters, Penn-Treebank style) tokens, tried in this order at each position:
_WORD = re.compile(
    r"""
    (?:[A-Za-z]\.){2,}(?![A-Za-z])                      # U.S. / a.m. / F.C.: letter-dot runs
  | (?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Inc|Corp|Co|Ltd|vs)\.(?!\w)  # common abbreviations keep their dot
  | [A-Z]\.(?!\w)                                       # an initial: J. Smith
  | (?<!\w)[A-Z]{1,2}\$                                 # currencies: C$ US$ HK$
  | (?<![\w.])\.\d+                                     # decimals without a leading zero: .500
  | \w+(?:[-'’./&]\w+|(?<=\d),\d+)*                     # words and numbers: 1,000 3.5 1996-08-22 O'Brien S&P 1/2
  | \.{2,} | -{2,}                                      # ... and --
  | \S                                                  # anything else is a one-character token
""",
    re.VERBOSE,
)
_CLITIC = re.compile(r"(?i)(?<=\w)(n['’]t|['’](?:s|re|m|ve|ll|d))$")  # typographic ’ too


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words of raw text with [start, end) character offsets, tokenized as CoNLL-2003 is.

    The rule: split on whitespace; punctuation and symbols are tokens of their own; a word keeps
    inner hyphens, dots, slashes, ampersands and apostrophes (1996-08-22, 3.5, 1/2, S&P, O'Brien),
    commas between digits (1,000), currency prefixes (US$), and the trailing dot of letter-dot
    abbreviations (U.S.), a few titles (Mr., Inc., vs.) and initials (J.); clitics split off
    Treebank-style ("Germany's" -> "Germany" "'s", "don't" -> "do" "n't"), because CoNLL has them
    as separate words and so the model learned them that way.
    """
    words = []
    for match in _WORD.finditer(text):
        word, start = match.group(), match.start()
        clitic = _CLITIC.search(word)
        if clitic:
            cut = clitic.start()
            words.append((word[:cut], start, start + cut))
            words.append((word[cut:], start + cut, match.end()))
        else:
            words.append((word, start, match.end()))
    return words


def spans_to_entities(
    text: str, words: list[tuple[str, int, int]], tags: list[str], scores: list[float] | None = None
) -> list[dict]:
    """Entities as {entity, text, start, end, score} with character offsets into `text`.

    `score` is the mean over the entity's words of each word's top-label probability: one
    unsure word pulls the entity down, a long confident name is not penalised for its length.
    It is None when no scores are given, rather than a made-up confidence.
    """
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags; predict one tag per word")
    if scores is not None and len(scores) != len(words):
        raise ValueError(f"{len(words)} words but {len(scores)} scores; give one score per word")
    found = []
    for kind, first, last in entities(tags):
        start, end = words[first][1], words[last - 1][2]
        if not 0 <= start <= end <= len(text):
            raise ValueError(
                f"word offsets {start}..{end} fall outside the text ({len(text)} characters); "
                "use the offsets split_words returned for this text"
            )
        score = float(np.mean(scores[first:last])) if scores is not None else None
        found.append({"entity": kind, "text": text[start:end], "start": start, "end": end, "score": score})
    return found
