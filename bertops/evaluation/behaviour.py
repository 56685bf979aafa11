"""Behavioural checks in the style of CheckList (Ribeiro et al., 2020), read from a data file.

Three kinds of case, all in a YAML file in the repo (see data/behaviour/sst2.yaml):
- mft (minimum functionality): a simple text and the label it must get;
- inv (invariance): a text and a perturbation (`typo`, `names`) that must not change the label;
- dir (directional expectation): a text, an edited text and the label whose probability must move
  `up` or `down` by at least `min_change` (e.g. adding a negation lowers P(positive)), or end
  within `min_change` of that end of the scale (a 0.99 cannot rise by 0.1).

The perturbations are deterministic (seeded by the text), so a report is reproducible.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bertops.errors import BertopsError

MAX_FAILURES_SHOWN = 10


class BehaviourCasesError(BertopsError, ValueError):
    """The behavioural cases file cannot be used; the message names the file, the case and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MinimumFunctionality(_Strict):
    text: str = Field(min_length=1)
    label: str


class Invariance(_Strict):
    text: str = Field(min_length=1)
    perturb: Literal["typo", "names"]


class Directional(_Strict):
    text: str = Field(min_length=1)
    edited: str = Field(min_length=1)
    label: str
    direction: Literal["up", "down"]


class BehaviourCases(_Strict):
    labels: list[str] = Field(min_length=2)
    names: list[str] = Field(default_factory=list)
    min_change: float = Field(default=0.1, ge=0, le=1)
    mft: list[MinimumFunctionality] = Field(default_factory=list)
    inv: list[Invariance] = Field(default_factory=list)
    dir: list[Directional] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> BehaviourCases:
        labelled: list[MinimumFunctionality | Directional] = [*self.mft, *self.dir]
        unknown = sorted({c.label for c in labelled} - set(self.labels))
        if unknown:
            raise ValueError(f"cases use labels {unknown} that are not in `labels` {self.labels}")
        if any(c.perturb == "names" for c in self.inv) and len(self.names) < 2:
            raise ValueError("`names` perturbations need a `names` list of at least two names")
        return self


def load_cases(path: Path) -> BehaviourCases:
    if not path.is_file():
        raise BehaviourCasesError(
            f"behavioural cases file {path} not found; set evaluate.behaviour to a file "
            "(see data/behaviour/sst2.yaml) or to null"
        )
    try:
        cases = BehaviourCases.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise BehaviourCasesError(f"{path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise BehaviourCasesError(f"{path}: {problems}") from None
    for case in cases.inv:  # fail on the file, not halfway through an evaluation
        perturb(case.text, case.perturb, cases.names, source=path)
    return cases


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def perturb(text: str, kind: str, names: list[str], source: Path | str = "cases") -> str:
    """The perturbed text: `typo` swaps two adjacent inner letters of one word of 4+ letters;
    `names` replaces every listed name in the text by another listed name."""
    rng = np.random.default_rng(_seed(text))
    if kind == "typo":
        # Inner positions i (first and last letter kept) where swapping i and i+1 changes the word.
        spots = [
            i
            for w in re.finditer(r"[A-Za-z]{4,}", text)
            for i in range(w.start() + 1, w.end() - 2)
            if text[i] != text[i + 1]
        ]
        if not spots:
            raise BehaviourCasesError(f"{source}: typo case {text!r} has no word of 4+ letters to perturb")
        i = spots[int(rng.integers(len(spots)))]
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    found = pattern.findall(text)
    if not found:
        raise BehaviourCasesError(f"{source}: names case {text!r} contains none of the listed names")
    shift = 1 + int(rng.integers(len(names) - 1))  # never maps a name onto itself
    return pattern.sub(lambda m: names[(names.index(m.group(1)) + shift) % len(names)], text)


def run_behaviour(cases: BehaviourCases, predict: Callable[[list[str]], np.ndarray], labels: list[str]) -> dict:
    """Pass rates per kind (with the first failing cases) given `predict`: texts -> probabilities
    with one column per entry of `labels`."""
    if sorted(cases.labels) != sorted(labels):
        raise BehaviourCasesError(
            f"the cases are written for labels {cases.labels}, the model predicts {labels}; "
            "point evaluate.behaviour at cases for this task"
        )
    column = {name: i for i, name in enumerate(labels)}
    report: dict[str, dict] = {}

    def record(kind: str, passed: np.ndarray, failures: list[dict]) -> None:
        n = int(len(passed))
        report[kind] = {
            "cases": n,
            "passed": int(passed.sum()),
            "pass_rate": float(passed.mean()) if n else None,
            "failures": failures[:MAX_FAILURES_SHOWN],
        }

    if cases.mft:
        probs = predict([c.text for c in cases.mft])
        predicted = probs.argmax(-1)
        passed = np.array([predicted[i] == column[c.label] for i, c in enumerate(cases.mft)])
        record(
            "mft",
            passed,
            [
                {"text": c.text, "expected": c.label, "predicted": labels[predicted[i]]}
                for i, c in enumerate(cases.mft)
                if not passed[i]
            ],
        )
    if cases.inv:
        edited = [perturb(c.text, c.perturb, cases.names) for c in cases.inv]
        before = predict([c.text for c in cases.inv]).argmax(-1)
        after = predict(edited).argmax(-1)
        passed = before == after
        record(
            "inv",
            passed,
            [
                {"text": c.text, "perturbed": e, "before": labels[b], "after": labels[a]}
                for c, e, b, a, ok in zip(cases.inv, edited, before, after, passed)
                if not ok
            ],
        )
    if cases.dir:
        before = predict([c.text for c in cases.dir])
        after = predict([c.edited for c in cases.dir])
        change = np.array([after[i, column[c.label]] - before[i, column[c.label]] for i, c in enumerate(cases.dir)])
        up = np.array([c.direction == "up" for c in cases.dir])
        final = np.array([after[i, column[c.label]] for i, c in enumerate(cases.dir)])
        # Moved far enough the right way, or already at the end of the scale (0.99 cannot rise by 0.1).
        moved = np.where(up, change, -change) >= cases.min_change
        saturated = np.where(up, final >= 1 - cases.min_change, final <= cases.min_change)
        passed = moved | saturated
        record(
            "dir",
            passed,
            [
                {
                    "text": c.text,
                    "edited": c.edited,
                    "label": c.label,
                    "direction": c.direction,
                    "change": round(float(d), 4),
                }
                for c, d, ok in zip(cases.dir, change, passed)
                if not ok
            ],
        )
    return report
