"""The one request encoding, from training to serving: text normalisation, truncation, pair encoding.

Pure (it imports nothing of bertops and takes the tokenizer as an argument): `prepare`, `evaluate`,
the serving-cost probe, the ONNX agreement check and the endpoint all encode through it, and
`bertops package` copies this file into the Bento as `bertops_encoding.py`, so a text is turned
into the same token ids at training time and at serving time.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

FEED_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# C0 controls but tab/newline/CR (whitespace, collapsed below), and DEL: never meaningful in text
CONTROL_CHARACTERS = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL = re.compile(CONTROL_CHARACTERS)

UnicodeForm = Literal["NFC", "NFD", "NFKC", "NFKD"]


def normalize_text(text: str, form: UnicodeForm = "NFC", lowercase: bool = False) -> str:
    """Unicode normal form, control characters (NUL, ...) removed, collapsed whitespace (tabs,
    newlines, runs of spaces -> one space)."""
    text = " ".join(_CONTROL.sub("", unicodedata.normalize(form, text)).split())
    return text.lower() if lowercase else text


def is_pair(item: Any) -> bool:
    """A (first, second) sentence pair rather than a single text."""
    return isinstance(item, (tuple, list))


def normalize_input(item: Any, form: UnicodeForm = "NFC", lowercase: bool = False) -> Any:
    """A text, or each sentence of a pair, normalised as `normalize_text` does."""
    if is_pair(item):
        return tuple(normalize_text(str(t), form, lowercase) for t in item)
    return normalize_text(item, form, lowercase)


@dataclass(frozen=True)
class Encoded:
    """Token ids per input, cut to max_length, with what the cut removed."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    lengths: list[int]  # tokens before truncation ([CLS]/[SEP] included)
    truncated: list[bool]


def encode(tokenizer: Any, inputs: Sequence[Any], max_length: int) -> Encoded:
    """Texts -> `[CLS] text [SEP]`; pairs -> `[CLS] a [SEP] b [SEP]` with segment ids 0/1.

    A text longer than max_length keeps its first max_length - 1 tokens and its final [SEP]; a
    pair is cut longest-first (the longer sentence loses tokens first), keeping both [SEP]s.
    Inputs are expected already normalised (`normalize_input`)."""
    if not inputs:
        return Encoded([], [], [], [])
    if is_pair(inputs[0]):
        firsts, seconds = [str(p[0]) for p in inputs], [str(p[1]) for p in inputs]
        lengths = [len(row) for row in tokenizer(firsts, seconds)["input_ids"]]
        cut = tokenizer(firsts, seconds, truncation="longest_first", max_length=max_length)
        ids = [list(row) for row in cut["input_ids"]]
        types = [list(row) for row in cut["token_type_ids"]] if "token_type_ids" in cut else [[0] * len(r) for r in ids]
        return Encoded(ids, types, lengths, [n > max_length for n in lengths])
    full = tokenizer(list(inputs), add_special_tokens=True)["input_ids"]
    lengths = [len(row) for row in full]
    ids = [list(row[: max_length - 1]) + [row[-1]] if len(row) > max_length else list(row) for row in full]
    return Encoded(ids, [[0] * len(row) for row in ids], lengths, [n > max_length for n in lengths])


def to_feeds(ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded int64 arrays (B, T) named as the model's inputs."""
    width = max(len(row) for row in ids)
    feeds = {name: np.zeros((len(ids), width), dtype=np.int64) for name in FEED_NAMES}
    feeds["input_ids"][:] = pad_id
    for i, (row, segment) in enumerate(zip(ids, types)):
        feeds["input_ids"][i, : len(row)] = row
        feeds["attention_mask"][i, : len(row)] = 1
        feeds["token_type_ids"][i, : len(segment)] = segment
    return feeds
