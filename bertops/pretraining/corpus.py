"""Pretraining corpus preparation (BERT, Devlin et al. 2018, section 3.1 and appendix A.2).

Raw documents -> sentences -> next-sentence-prediction (NSP) examples:
- documents: WikiText-style files, articles delimited by top-level ` = Title = ` lines (section
  headings ` = = ... = = ` stay inside their article and are dropped as text);
- sentences: a rule-based splitter (end punctuation followed by a capitalised word), which is
  what BERT's data pipeline needs: segment boundaries, not perfect sentences;
- examples: segment A is one or more whole sentences from a document; segment B is the true
  continuation (50%) or text from another document (50%), and the pair is trimmed to
  `max_length` - 3 tokens ([CLS] A [SEP] B [SEP]). As in the reference implementation, a
  share (`short_seq_prob`) of examples uses a shorter random target length, so the model also
  sees short inputs. Unlike the reference code, the true/random choice is drawn before the pair is
  built, so the classes stay balanced (the reference forces "random" for one-sentence chunks).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TITLE = re.compile(r"^ = (?!=)(.+?) = $")
HEADING = re.compile(r"^ (= )+.+?( =)+ $")
# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before a space and
# an upper-case letter, digit or quote; WikiText writes " . " with spaces around punctuation.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
WIKITEXT_ESCAPES = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}


@dataclass(frozen=True)
class PretrainExample:
    a: list[int]  # token ids of segment A (no special tokens)
    b: list[int]  # token ids of segment B
    is_next: int  # 1 = B follows A in the document, 0 = B is from another document


def read_documents(path: Path, min_sentences: int = 2) -> list[list[str]]:
    """A WikiText raw file -> documents, each a list of sentences (headings dropped)."""
    documents: list[list[str]] = []
    current: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if TITLE.match(line):
            if len(current) >= min_sentences:
                documents.append(current)
            current = []
            continue
        text = line.strip()
        if not text or HEADING.match(line):
            continue
        for escape, plain in WIKITEXT_ESCAPES.items():
            text = text.replace(escape, plain)
        current.extend(s for s in split_sentences(text) if s)
    if len(current) >= min_sentences:
        documents.append(current)
    return documents


def split_sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(paragraph)]


def nsp_examples(
    documents: list[list[list[int]]], max_length: int, short_seq_prob: float, seed: int
) -> list[PretrainExample]:
    """NSP pairs from tokenized documents (each a list of sentences, each a list of token ids)."""
    if len(documents) < 2:
        raise ValueError(f"next-sentence prediction needs at least 2 documents, got {len(documents)}")
    rng = random.Random(seed)
    budget = max_length - 3

    def target_length() -> int:
        return rng.randint(2, budget) if rng.random() < short_seq_prob else budget

    examples: list[PretrainExample] = []
    for d, document in enumerate(documents):
        target, chunk, length, i = target_length(), [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                want_next = rng.random() < 0.5  # decided first, so true and random pairs stay 50/50
                if want_next and len(chunk) == 1:
                    if i + 1 < len(document):  # a single long sentence: its true continuation is the next one
                        i += 1
                        chunk.append(document[i])
                    else:  # the document's last sentence has no continuation: skip it
                        target, chunk, length = target_length(), [], 0
                        i += 1
                        continue
                cut = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:cut] for t in s]
                if not want_next:
                    b, is_next = random_segment(documents, d, max(1, target - len(a)), rng), 0
                    i -= len(chunk) - cut  # the unused sentences start the next chunk
                else:
                    b, is_next = [t for s in chunk[cut:] for t in s], 1
                a, b = _truncate(a, b, budget, rng)
                if a and b:
                    examples.append(PretrainExample(a, b, is_next))
                target, chunk, length = target_length(), [], 0
            i += 1
    return examples


def random_segment(documents: list[list[list[int]]], exclude: int, length: int, rng: random.Random) -> list[int]:
    """At least `length` tokens of consecutive sentences from a random other document."""
    other = rng.randrange(len(documents) - 1)
    other += other >= exclude
    source = documents[other]
    segment: list[int] = []
    for sentence in source[rng.randrange(len(source)) :]:
        segment.extend(sentence)
        if len(segment) >= length:
            break
    return segment


def _truncate(a: list[int], b: list[int], budget: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Trim the longer segment, from the front or the back at random, until both fit."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()
    return a, b


def tokenize_documents(
    documents: list[list[str]], encode: Callable[[list[str]], list[list[int]]]
) -> list[list[list[int]]]:
    """Sentences -> token ids (no special tokens), document structure kept; empty sentences dropped."""
    flat = [s for doc in documents for s in doc]
    ids = encode(flat)
    out, k = [], 0
    for doc in documents:
        sentences = [ids[k + j] for j in range(len(doc)) if ids[k + j]]
        k += len(doc)
        if len(sentences) >= 2:
            out.append(sentences)
    return out
