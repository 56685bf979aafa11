"""The comparison: a live window against a version's reference profile, feature by feature.

Each feature gets the two-sample test that fits its kind, and a verdict from the test's p-value
(drift when p < alpha / number of features judged: a Bonferroni bound, so that one window raises
a false alarm with probability at most alpha however many features are judged):

| feature | test | shift size reported |
| --- | --- | --- |
| tokens (input length) | Kolmogorov-Smirnov (scipy.stats.ks_2samp) | PSI on reference deciles |
| unknown_share | Kolmogorov-Smirnov | mean, reference and live |
| truncated | Fisher's exact test on the 2x2 counts | rates |
| label (predicted) | chi-square on the label counts | PSI on label shares |
| confidence | Kolmogorov-Smirnov | PSI on reference deciles |
| embedding | MMD (Gaussian kernel, median bandwidth), permutation p-value | MMD^2 |

The PSI (population stability index) is the size of a shift, not the verdict: on a few hundred
inputs its noise alone reaches 0.05-0.1, which the tests account for and a fixed PSI cut does not.
A window holding fewer than `min_window` inputs gets no verdict ("insufficient"), and a feature
the reference lacks is "missing", never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

DRIFT, OK, INSUFFICIENT, MISSING = "drift", "ok", "insufficient", "missing"


@dataclass
class FeatureDrift:
    feature: str
    test: str
    statistic: float | None
    p_value: float | None
    verdict: str
    psi: float | None = None
    reference: dict = field(default_factory=dict)  # a summary of each side
    live: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class DriftReport:
    verdict: str  # drift | ok | insufficient
    window: int  # inputs in the live window
    reference_rows: int
    alpha: float
    threshold: float  # the per-feature p-value below which a feature drifts (alpha / judged)
    features: list[FeatureDrift]
    message: str

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.verdict == DRIFT]

    def to_dict(self) -> dict:
        return {**asdict(self), "drifted": self.drifted}


def psi(reference: np.ndarray, live: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of `live` against `reference` on the reference's quantile bins
    (fewer when values repeat, e.g. integer lengths)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur = np.bincount(np.searchsorted(edges, live, side="right"), minlength=len(edges) + 1)
    return share_psi(ref, cur, eps)


def share_psi(reference_counts: np.ndarray, live_counts: np.ndarray, eps: float = 1e-4) -> float:
    p = np.clip(reference_counts / max(reference_counts.sum(), 1), eps, None)
    q = np.clip(live_counts / max(live_counts.sum(), 1), eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def _summary(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"n": 0}
    q = np.quantile(values.astype(np.float64), [0.1, 0.5, 0.9])
    return {"n": int(len(values)), "mean": round(float(values.mean()), 4), "p10": round(float(q[0]), 4),
            "p50": round(float(q[1]), 4), "p90": round(float(q[2]), 4)}  # fmt: skip


def _ks(name: str, reference: np.ndarray, live: np.ndarray, with_psi: bool = True) -> FeatureDrift:
    from scipy.stats import ks_2samp

    result = ks_2samp(reference.astype(np.float64), live.astype(np.float64))
    return FeatureDrift(
        name, "kolmogorov-smirnov", float(result.statistic), float(result.pvalue), "",
        psi(reference, live) if with_psi else None, _summary(reference), _summary(live),
    )  # fmt: skip


def _truncated(reference: np.ndarray, live: np.ndarray) -> FeatureDrift:
    from scipy.stats import fisher_exact

    a, b = int(reference.sum()), int(live.sum())
    table = [[a, len(reference) - a], [b, len(live) - b]]
    p = 1.0 if a + b == 0 else float(fisher_exact(table).pvalue)
    rate = {"rate": round(a / max(len(reference), 1), 4), "n": len(reference)}
    return FeatureDrift("truncated", "fisher-exact", abs(b / max(len(live), 1) - rate["rate"]), p, "", None,
                        rate, {"rate": round(b / max(len(live), 1), 4), "n": len(live)})  # fmt: skip


def _labels(reference: np.ndarray, live: np.ndarray, names: list[str]) -> FeatureDrift:
    from scipy.stats import chi2_contingency

    k = max(len(names), int(reference.max(initial=0)) + 1, int(live.max(initial=0)) + 1)
    ref, cur = np.bincount(reference, minlength=k), np.bincount(live, minlength=k)
    used = (ref + cur) > 0
    if used.sum() < 2:
        statistic, p = 0.0, 1.0
    else:
        result = chi2_contingency(np.stack([ref[used], cur[used]]))
        statistic, p = float(result.statistic), float(result.pvalue)

    def shares(counts: np.ndarray) -> dict:
        total = max(int(counts.sum()), 1)
        return {(names[i] if i < len(names) else str(i)): round(int(c) / total, 4) for i, c in enumerate(counts)}

    return FeatureDrift("label", "chi-square", statistic, p, "", share_psi(ref, cur), shares(ref), shares(cur))


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """(MMD^2, permutation p-value) of samples x and y under a Gaussian kernel whose bandwidth is the
    median distance of the pooled sample. The statistic is a'Ka with a = 1/m on x, -1/n on y; all
    permutations are scored with one matrix product."""
    z = np.concatenate([x, y]).astype(np.float64)
    m, n = len(x), len(y)
    squared = np.sum(z * z, axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2.0 * z @ z.T, 0.0)
    upper = d2[np.triu_indices(len(z), k=1)]
    bandwidth = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-d2 / bandwidth)
    rng = np.random.default_rng(seed)
    signs = np.empty((len(z), permutations + 1))
    base = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)])
    signs[:, 0] = base
    for j in range(1, permutations + 1):
        signs[:, j] = base[rng.permutation(len(z))]
    stats = np.einsum("ij,ij->j", signs, kernel @ signs)
    observed = float(stats[0])
    p = float((1 + np.sum(stats[1:] >= observed)) / (permutations + 1))
    return observed, p


def _embedding(reference: np.ndarray, live: np.ndarray, permutations: int, max_rows: int, seed: int) -> FeatureDrift:
    rng = np.random.default_rng(seed)

    def cap(rows: np.ndarray) -> np.ndarray:
        rows = rows.astype(np.float32)
        rows = rows / np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12, None)  # direction, as cosine
        return rows if len(rows) <= max_rows else rows[rng.choice(len(rows), max_rows, replace=False)]

    x, y = cap(reference), cap(live)
    statistic, p = mmd_test(x, y, permutations, seed)
    return FeatureDrift("embedding", f"mmd-permutation ({permutations})", statistic, p, "", None,
                        {"n": len(reference), "dims": int(reference.shape[1])}, {"n": len(live)})  # fmt: skip


def compare(
    reference: dict,
    live: dict,
    labels: list[str],
    alpha: float,
    min_window: int,
    permutations: int,
    max_embedding_rows: int,
    seed: int = 0,
) -> DriftReport:
    """Every feature of `live` (a window snapshot) against `reference` (a reference profile's arrays)."""
    n = len(live.get("tokens", ()))
    rows = len(reference.get("tokens", ()))
    if n < min_window:
        return DriftReport(INSUFFICIENT, n, rows, alpha, 0.0, [],
                           f"the window holds {n} inputs; at least {min_window} are needed to judge "
                           "(monitor.min_window): send more traffic or wait")  # fmt: skip
    features: list[FeatureDrift] = []
    for name in ("tokens", "unknown_share", "confidence"):
        if name not in live or len(live[name]) == 0:
            continue
        if name not in reference or len(reference[name]) == 0:
            features.append(FeatureDrift(name, "", None, None, MISSING, note="the reference profile lacks it"))
            continue
        features.append(_ks(name, reference[name], live[name], with_psi=name != "unknown_share"))
    if "truncated" in live and "truncated" in reference:
        features.append(_truncated(reference["truncated"], live["truncated"]))
    if len(live.get("label", ())):
        if len(reference.get("label", ())):
            features.append(_labels(reference["label"].astype(np.int64), live["label"].astype(np.int64), labels))
        else:
            features.append(FeatureDrift("label", "", None, None, MISSING, note="the reference profile lacks it"))
    if len(live.get("embedding", ())):
        if len(reference.get("embedding", ())):
            features.append(_embedding(reference["embedding"], live["embedding"], permutations,
                                       max_embedding_rows, seed))  # fmt: skip
        else:
            features.append(FeatureDrift("embedding", "", None, None, MISSING, note="the reference profile lacks it"))
    judged = [f for f in features if f.verdict != MISSING]
    threshold = alpha / max(len(judged), 1)
    for f in judged:
        if f.feature in ("label", "confidence", "embedding") and len(live.get(f.feature, ())) < min_window:
            f.verdict, f.note = INSUFFICIENT, f"only {len(live.get(f.feature, ()))} answered inputs"
        else:
            f.verdict = DRIFT if (f.p_value is not None and f.p_value < threshold) else OK
    drifted = [f.feature for f in judged if f.verdict == DRIFT]
    verdict = DRIFT if drifted else OK
    message = (
        f"drift in {', '.join(drifted)} (p < {threshold:.2g}) over the last {n} inputs"
        if drifted
        else f"no drift over the last {n} inputs (every p >= {threshold:.2g})"
    )
    return DriftReport(verdict, n, rows, alpha, threshold, features, message)
