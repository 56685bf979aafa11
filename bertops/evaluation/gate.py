"""`gate`: a pure decision on whether an evaluated model may be promoted.

Absolute thresholds from `params.yaml` (the champion/challenger comparison builds on this).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from bertops.config import GateConfig


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float
    threshold: float
    comparison: str     # ">=" or "<="
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    approved: bool
    checks: list[GateCheck] = field(default_factory=list)
    model_sha256: str | None = None   # the weights this decision is about
    comparison: dict | None = None    # vs. production: difference, CI, McNemar p, verdict

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name} = {c.value:.4f}, needs {c.comparison} {c.threshold}" for c in self.checks if not c.passed]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "reasons": self.reasons}, indent=2) + "\n"

    def to_markdown(self) -> str:
        lines = [f"## Gate: {'APPROVED' if self.approved else 'REJECTED'}", "",
                 "| check | value | threshold | result |", "| --- | --- | --- | --- |"]
        lines += [f"| {c.name} | {c.value:.4f} | {c.comparison} {c.threshold} | {'pass' if c.passed else 'FAIL'} |"
                  for c in self.checks]
        if self.comparison:
            c = self.comparison
            lines += ["", f"vs. production {c['version']}: accuracy difference {c['difference']:+.4f} "
                      f"({c['confidence']:.0%} CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]), McNemar p = {c['mcnemar_p']:.4g} "
                      f"-> **{c['verdict']}**"]
        else:
            lines += ["", "No production model yet: judged on thresholds alone."]
        return "\n".join(lines) + "\n"


def decide(metrics: dict, policy: GateConfig) -> GateDecision:
    """Approve only if every threshold holds and, when a production model was scored on the same
    examples (`metrics["champion"]`), the candidate is non-inferior to it. A missing or NaN
    metric fails its check. The first model of a registry is judged on thresholds alone."""
    rules = [("accuracy", policy.min_accuracy, ">="), ("macro_f1", policy.min_macro_f1, ">="), ("ece", policy.max_ece, "<=")]
    checks = []
    for name, threshold, comparison in rules:
        value = metrics.get(name)
        valid = isinstance(value, (int, float)) and value == value  # NaN != NaN
        passed = valid and (value >= threshold if comparison == ">=" else value <= threshold)
        checks.append(GateCheck(name, float(value) if valid else float("nan"), threshold, comparison, bool(passed)))
    champion = metrics.get("champion")
    comparison = None
    if champion:
        low = champion.get("ci_low")
        valid = isinstance(low, (int, float)) and low == low
        passed = valid and low >= -policy.non_inferiority_margin
        checks.append(GateCheck(f"accuracy vs production {champion.get('version')} (CI low of difference)",
                                float(low) if valid else float("nan"), -policy.non_inferiority_margin, ">=", bool(passed)))
        verdict = ("better" if valid and low > 0 else "non-inferior" if passed else "inferior")
        comparison = {**champion, "verdict": verdict}
    return GateDecision(all(c.passed for c in checks), checks, metrics.get("model_sha256"), comparison)


def gate(config, root=None) -> GateDecision:
    """The `gate` stage: decide on reports/evaluate/metrics.json, write decision JSON + markdown."""
    from pathlib import Path

    root = Path(".") if root is None else Path(root)
    metrics_path = root / config.paths.reports / "evaluate" / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no evaluation at {metrics_path}; run `bertops evaluate` first")
    decision = decide(json.loads(metrics_path.read_text()), config.gate)
    out = root / config.paths.reports / "gate"
    out.mkdir(parents=True, exist_ok=True)
    (out / "decision.json").write_text(decision.to_json())
    (out / "decision.md").write_text(decision.to_markdown())
    return decision
