"""`gate`: a pure decision on whether an evaluated model may be promoted.

`decide(report, policy)` applies the policy of `params.yaml` (section `gate`) to an evaluation
report (reports/evaluate/metrics.json):
- everything is judged on the runtime that will be served (`serving.runtime`, recorded in the
  decision): `evaluate` scored that runtime, and `package` ships exactly those bytes;
- absolute thresholds: accuracy, macro-F1, ECE, model size, behavioural pass rates;
- latency: the first model's median p95 (over rounds) against `max_p95_latency_ms`; with a
  production model, the candidate / production p95 ratio, timed in the same alternating rounds,
  against `max_p95_latency_ratio` (a busy machine slows both, so a scheduled retrain on a shared
  machine is not failed by noise);
- champion/challenger, when a production model was scored on the same examples: the candidate
  must be non-inferior (lower bound of the paired-bootstrap CI of the accuracy difference
  >= -margin) overall and on every slice large enough to judge; McNemar's p is reported;
- speed for accuracy (`speed_trade`), only for a distilled student of the production model (its
  lineage names production's weights as its teacher): when its serving p95 is at least
  `min_speedup` times lower than production's (median of the per-round ratios), it is judged on
  the lower CI bound of its accuracy as a share of production's instead of non-inferiority;
- the first model of a registry (no champion) is judged on the thresholds alone;
- `/embed`'s model (the report's `embedding` section, bertops.evaluation.embedding), for every
  task: the lower bound of the paired-bootstrap CI of its retrieval recall@1 (and STS Spearman)
  minus production's /embed model's, and minus the parent encoder's, must be >= -embedding_margin;
  `min_embedding_recall_at_1` is a floor.
A metric the policy needs but the report lacks is an error (IncompleteReport), not a verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bertops.config import GateConfig
from bertops.errors import BertopsError


class IncompleteReport(BertopsError, ValueError):
    """The evaluation report lacks a metric the gate policy needs."""


@dataclass(frozen=True)
class GateRules:
    """What a task asks the gate to judge (`Task.gate_rules`); the serving cost (p95 latency, size)
    is judged for every task.

    - `floors`: (name, dotted path in the report, threshold or None = off, ">=" or "<=");
    - `paired`: the report's champion holds paired-bootstrap CIs of the per-example difference
      (overall and per slice): judge non-inferiority on the CI (and allow `gate.speed_trade`);
    - else `champion_metric` (name, key): the candidate's key minus the champion's, as a point
      difference, must be >= -non_inferiority_margin.
    """

    floors: tuple[tuple[str, str, float | None, str], ...] = ()
    paired: bool = True
    champion_metric: tuple[str, str] | None = None


def paired_accuracy_rules(policy: GateConfig) -> GateRules:
    """Accuracy, macro-F1, calibration and behaviour floors with the paired champion comparison
    (classifiers; the default when no rules are given)."""
    floors = [
        ("accuracy", "accuracy", policy.min_accuracy, ">="),
        ("macro_f1", "macro_f1", policy.min_macro_f1, ">="),
        ("ece", "ece", policy.max_ece, "<="),
    ]
    if policy.min_behaviour_pass_rate is not None:
        floors += [
            (f"behaviour {kind} pass rate", f"behaviour.{kind}.pass_rate", threshold, ">=")
            for kind, threshold in policy.min_behaviour_pass_rate.model_dump().items()
        ]
    return GateRules(tuple(floors), paired=True)


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float
    threshold: float
    comparison: str  # ">=" or "<="
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    approved: bool
    checks: list[GateCheck] = field(default_factory=list)
    model_sha256: str | None = None  # the weights this decision is about
    runtime: str | None = None  # the runtime that was judged (and the only one `package` ships)
    runtime_sha256: str | None = None  # its file (ONNX), when it is not the PyTorch weights
    comparison: dict | None = None  # vs. production: overall and per-slice differences, CIs, p-values, verdicts
    embedding: dict | None = None  # /embed's model judged: model, runtime, runtime_sha256 (what `package` ships)
    champion: str | None = None  # the production version the candidate was compared with (None: the first model)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name} = {c.value:.4f}, needs {c.comparison} {c.threshold}" for c in self.checks if not c.passed]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "reasons": self.reasons}, indent=2) + "\n"

    def to_markdown(self) -> str:
        lines = [
            f"## Gate: {'APPROVED' if self.approved else 'REJECTED'}",
            "",
            f"Judged on the runtime that will be served: **{self.runtime or 'torch'}**"
            + (f"; /embed: {self.embedding['model']} on **{self.embedding['runtime']}**." if self.embedding else "."),
            "",
            "| check | value | threshold | result |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {c.name} | {c.value:.4f} | {c.comparison} {c.threshold} | {'pass' if c.passed else 'FAIL'} |"
            for c in self.checks
        ]
        if self.comparison:
            c = self.comparison
            lines += [
                "",
                f"### vs. production {c['version']} (same {c['examples']} examples, "
                f"{c['confidence']:.0%} paired-bootstrap CI of the accuracy difference)",
                "",
                "| scope | examples | candidate | production | difference | CI | McNemar p | verdict |",
                "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
            ]
            for scope, r in [("overall", c), *c.get("slices", {}).items()]:
                lines.append(
                    f"| {scope} | {r['examples']} | {r['accuracy'] + r['difference']:.4f} | {r['accuracy']:.4f} | "
                    f"{r['difference']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['mcnemar_p']:.4g} | "
                    f"{r['verdict']} |"
                )
        elif self.champion:
            lines += ["", f"Compared with production {self.champion} on the same eval examples: the checks above."]
        else:
            lines += ["", "No production model yet: judged on thresholds alone."]
        if not self.approved:
            lines += ["", "Rejected because:", *[f"- {r}" for r in self.reasons]]
        return "\n".join(lines) + "\n"


def _lookup(report: dict, path: str):
    node = report
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node or node[part] is None:
            raise IncompleteReport(
                f"the evaluation report has no {path!r}, which the gate policy needs; re-run "
                "`bertops evaluate` with this bertops version, or set the matching gate "
                "threshold to null in params.yaml"
            )
        node = node[part]
    return node


def _check(name: str, value, threshold: float, comparison: str) -> GateCheck:
    valid = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    passed = valid and (value >= threshold if comparison == ">=" else value <= threshold)
    return GateCheck(name, float(value) if valid else float("nan"), threshold, comparison, bool(passed))


def _verdict(ci_low: float, margin: float) -> str:
    if not (isinstance(ci_low, (int, float)) and math.isfinite(ci_low)):
        return "inferior"
    return "better" if ci_low > 0 else "non-inferior" if ci_low >= -margin else "inferior"


def _served(report: dict) -> dict:
    serving = report.get("serving") or {}
    embedding = report.get("embedding")
    return {
        "runtime": serving.get("runtime", "torch"),
        "runtime_sha256": serving.get("runtime_sha256"),
        "embedding": {k: embedding.get(k) for k in ("model", "embedding_model", "runtime", "runtime_sha256")}
        if embedding
        else None,
    }


def _cost_checks(report: dict, policy: GateConfig) -> list[GateCheck]:
    """Latency (the absolute p95 floor for a first model, the ratio to production timed in the same
    alternating rounds when there is one) and model size."""
    checks = []
    ratio = ((report.get("champion") or {}).get("p95_ratio") or {}).get("median")
    if report.get("champion") and policy.max_p95_latency_ratio is not None and ratio is not None:
        version = report["champion"].get("version")
        checks.append(
            _check(
                f"p95 latency / production {version}'s (median over alternating rounds)",
                ratio,
                policy.max_p95_latency_ratio,
                "<=",
            )
        )
    elif policy.max_p95_latency_ms is not None:
        checks.append(
            _check("p95 latency ms", _lookup(report, "serving.latency.p95_ms"), policy.max_p95_latency_ms, "<=")
        )
    if policy.max_model_size_mb is not None:
        checks.append(_check("model size MB", _lookup(report, "serving.model_size_mb"), policy.max_model_size_mb, "<="))
    return checks


def _embedding_checks(report: dict, policy: GateConfig) -> list[GateCheck]:
    """/embed's model against each baseline it was scored beside (production's /embed model, the
    parent encoder): non-inferior on the CI of the paired differences; the recall@1 floor."""
    section = report.get("embedding")
    if not section or not section.get("scored"):
        return []
    checks = []
    if policy.min_embedding_recall_at_1 is not None:
        checks.append(
            _check(
                "embedding retrieval recall@1",
                _lookup(report, "embedding.retrieval.recall@1"),
                policy.min_embedding_recall_at_1,
                ">=",
            )  # fmt: skip
        )
    if policy.embedding_margin is None:
        return checks
    for key, other in (section.get("versus") or {}).items():
        label = "production's" if key == "production" else "the parent encoder's"
        for benchmark, figure in (("retrieval", "recall@1"), ("sts", "spearman")):
            difference = (other.get(benchmark) or {}).get(f"{figure}_difference")
            if difference is not None:
                checks.append(
                    _check(
                        f"embedding {figure} vs {label} (CI low of difference)",
                        difference["ci_low"],
                        -policy.embedding_margin,
                        ">=",
                    )  # fmt: skip
                )
    return checks


def decide(report: dict, policy: GateConfig, rules: GateRules | None = None) -> GateDecision:
    """Approve only if every threshold holds and the candidate is non-inferior to production
    (when there is one) overall and on every slice of at least `min_slice_examples`."""
    rules = rules or paired_accuracy_rules(policy)
    if not rules.paired:
        return _decide_point(report, policy, rules)
    checks = [
        _check(name, _lookup(report, path), threshold, op)
        for name, path, threshold, op in rules.floors
        if threshold is not None
    ]
    checks += _cost_checks(report, policy)
    checks += _embedding_checks(report, policy)

    comparison = None
    champion = report.get("champion")
    if champion:
        version = champion.get("version")
        trade = policy.speed_trade
        student = _student_of(report, champion)
        speedup = _speedup(report, champion) if trade and student else None
        traded = trade is not None and speedup is not None and speedup >= trade.min_speedup
        if trade is not None and traded:
            # Speed for accuracy: a much faster student of production may give up a little accuracy.
            checks.append(
                _check(
                    f"speed-up vs production {version} (p95 ratio, median over alternating rounds)",
                    speedup,
                    trade.min_speedup,
                    ">=",
                )
            )
            champion_accuracy = max(_lookup(report, "champion.accuracy"), 1e-12)
            # The lower bound of the candidate's accuracy: production's + the CI low of the paired difference.
            ratio = (champion_accuracy + _lookup(report, "champion.ci_low")) / champion_accuracy
            checks.append(
                _check(
                    f"accuracy ratio vs production {version}, CI lower bound (speed trade)",
                    ratio,
                    trade.min_accuracy_ratio,
                    ">=",
                )
            )
            comparison = {
                **champion,
                "verdict": f"speed trade: {speedup:.2f}x faster, at least {ratio:.1%} of its accuracy",
                "speedup": speedup,
                "accuracy_ratio_low": ratio,
                "slices": {},
            }
        else:
            margin = policy.non_inferiority_margin
            low = _lookup(report, "champion.ci_low")
            checks.append(_check(f"accuracy vs production {version} (CI low of difference)", low, -margin, ">="))
            note = None
            if trade is not None and not student:
                note = "speed trade not considered: the candidate is not a distilled student of production"
            comparison = {
                **champion,
                "verdict": _verdict(low, margin),
                "speedup": speedup,
                "speed_trade": note,
                "slices": {},
            }
        for name, result in (champion.get("slices") or {}).items():
            slice_margin = policy.slice_non_inferiority_margin
            if result["examples"] < policy.min_slice_examples:
                verdict = f"not judged (< {policy.min_slice_examples} examples)"
            elif traded:  # a traded challenger loses a little everywhere: judge the point difference
                verdict = "within the slice margin" if result["difference"] >= -slice_margin else "inferior"
                checks.append(
                    _check(
                        f"slice {name}: accuracy difference vs production (speed trade)",
                        result["difference"],
                        -slice_margin,
                        ">=",
                    )
                )
            else:
                verdict = _verdict(result["ci_low"], slice_margin)
                checks.append(
                    _check(
                        f"slice {name}: accuracy vs production (CI low of difference)",
                        result["ci_low"],
                        -slice_margin,
                        ">=",
                    )
                )
            comparison["slices"][name] = {**result, "verdict": verdict}
    return GateDecision(
        all(c.passed for c in checks),
        checks,
        report.get("model_sha256"),
        **_served(report),
        comparison=comparison,
        champion=(champion or {}).get("version"),
    )


def decide_embedding(section: dict, policy: GateConfig) -> GateDecision:
    """An embedding-only version (`bertops package --embedding-only`): the embedding checks alone."""
    report = {"embedding": section, "serving": {"runtime": section["runtime"]}}
    checks = _embedding_checks(report, policy)
    return GateDecision(all(c.passed for c in checks), checks, None, **_served(report))


def _decide_point(report: dict, policy: GateConfig, rules: GateRules) -> GateDecision:
    """Floors, serving cost, and no worse than production's `champion_metric` by more than the
    non-inferiority margin (point estimate on the same eval examples)."""
    checks = [
        _check(label, _lookup(report, path), threshold, op)
        for label, path, threshold, op in rules.floors
        if threshold is not None
    ]
    checks += _cost_checks(report, policy)
    checks += _embedding_checks(report, policy)
    champion = report.get("champion")
    if champion and rules.champion_metric:
        name, key = rules.champion_metric
        difference = _lookup(report, key) - _lookup(report, f"champion.{key}")
        checks.append(
            _check(
                f"{name} vs production {champion.get('version')} (difference)",
                difference,
                -policy.non_inferiority_margin,
                ">=",
            )
        )
    return GateDecision(
        all(c.passed for c in checks),
        checks,
        report.get("model_sha256"),
        **_served(report),
        champion=(champion or {}).get("version"),
    )


def required_floor(value: float | None, setting: str, what: str) -> float:
    """A task's floor that must be set: a model with no floor on its main metric is never judged."""
    if value is None:
        raise IncompleteReport(
            f"gate.{setting} is null: a model needs a floor on its {what}; set it in "
            "params.yaml or the task's profile (configs/)"
        )
    return value


def _student_of(report: dict, champion: dict) -> bool:
    """Whether the candidate is a distilled student of the production model (its teacher's weights
    are production's)."""
    teacher = report.get("distilled_from")
    return bool(teacher) and teacher == champion.get("model_sha256")


def _speedup(report: dict, champion: dict) -> float | None:
    """Production p95 / candidate p95: the median of the per-round ratios of alternating rounds."""
    ratio = (champion.get("p95_ratio") or {}).get("median")
    if ratio is None:
        raise IncompleteReport(
            "gate.speed_trade needs the candidate's and production's serving p95, timed in the same "
            "alternating rounds (champion.p95_ratio); re-run `bertops evaluate` with this bertops "
            "version, or set gate.speed_trade to null"
        )
    return 1.0 / ratio if ratio > 0 else None


def gate(config, root=None) -> GateDecision:
    """The `gate` stage: decide on reports/evaluate/metrics.json, write decision JSON + markdown.

    An incomplete report raises before anything is written, so an earlier decision stays as it was."""
    root = Path(".") if root is None else Path(root)
    metrics_path = root / config.paths.reports / "evaluate" / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no evaluation at {metrics_path}; run `bertops evaluate` first")
    try:
        report = json.loads(metrics_path.read_text())
    except json.JSONDecodeError:
        raise IncompleteReport(f"{metrics_path} is not valid JSON; re-run `bertops evaluate`") from None
    from bertops.tasks import get_task

    decision = decide(report, config.gate, get_task(config.ingest.task).gate_rules(config.gate))
    out = root / config.paths.reports / "gate"
    out.mkdir(parents=True, exist_ok=True)
    (out / "decision.json").write_text(decision.to_json())
    (out / "decision.md").write_text(decision.to_markdown())
    return decision
