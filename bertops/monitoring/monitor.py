"""`monitor`: the stage. The production endpoint's live window (GET /monitor/window) against the
version's reference profile (bertops.monitoring.drift), written as reports/monitor/report.json,
report.md and drift.png; the scores go back to the endpoint (POST /admin/drift, as Prometheus
gauges) when its admin token is at hand.

When drift is found it may start a retrain: `decide_retrain` (pure) allows one per
`monitor.cooldown_s` and none while a retrain holds the workspace; an allowed one becomes the
Prefect event `bertops.drift.detected` (which `bertops schedule --on-drift` turns into a retrain
run) and a webhook notification (`notify.on_drift`). Failing here never touches serving: the
endpoint only ever answers a GET and, optionally, a POST of scores.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertops.config import Config
from bertops.errors import BertopsError, TransientError
from bertops.monitoring import drift as drift_tests
from bertops.monitoring.reference import ReferenceMissing, profile_version, read_reference
from bertops.monitoring.window import decode_arrays


class MonitorError(BertopsError, RuntimeError):
    """The window could not be read or judged (the message says why and what to do)."""


class EndpointUnreachable(MonitorError, TransientError):
    """No endpoint answered at the monitor's URL."""


def endpoint_url(config: Config) -> str:
    return (config.monitor.url or f"http://{config.serve.host}:{config.serve.port}").rstrip("/")


def _headers(config: Config, admin: bool = False) -> dict:
    if admin:
        from bertops.server import admin_token

        token = admin_token(config)
    else:
        token = os.environ.get(config.serve.api_token_env or "", "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def fetch_window(config: Config, url: str, version: str | None, last: int) -> dict:
    """The endpoint's window document: {version, labels, inputs, columns (encoded arrays)}."""
    import httpx

    params: dict[str, str | int] = {"last": last, **({"version": version} if version else {})}
    try:
        reply = httpx.get(f"{url}/monitor/window", params=params, headers=_headers(config), timeout=30)
    except httpx.HTTPError as exc:
        raise EndpointUnreachable(
            f"no endpoint answered at {url} ({exc}); start it with `bertops serve --detach` or pass --url"
        ) from None
    if reply.status_code != 200:
        try:
            detail = reply.json().get("error", reply.text)
        except ValueError:
            detail = reply.text
        raise MonitorError(f"{url}/monitor/window answered {reply.status_code}: {detail}")
    return reply.json()


def read_window_file(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MonitorError(f"cannot read the window file {path}: {exc}") from None
    if not isinstance(doc, dict) or "columns" not in doc or "version" not in doc:
        raise MonitorError(f"{path} is not a window (save the body of GET /monitor/window)")
    return doc


def reference_for(config: Config, root: Path, version: str, build: bool) -> tuple[dict, dict, Path]:
    """(arrays, summary, model folder) of `version`'s reference profile; with `build`, a version
    packaged without one gets it computed now from the prepared eval split (into its local copy)."""
    from bertops.model_store import fetch_version

    short = version.split(":", 1)[-1]
    model_dir = fetch_version(config, short, root)
    try:
        arrays, summary = read_reference(model_dir)
    except ReferenceMissing:
        if not build:
            raise
        from bertops.tasks import get_task

        prepared = root / config.paths.prepared / config.ingest.dataset
        inputs = get_task(config.ingest.task).monitor_inputs(config, root)
        if inputs is None:
            raise ReferenceMissing(f"task {config.ingest.task!r} names no inputs for a reference profile") from None
        profile_version(model_dir, prepared, inputs, config.monitor.reference_rows, config.monitor.seed)
        arrays, summary = read_reference(model_dir)
    return arrays, summary, model_dir


@dataclass(frozen=True)
class RetrainDecision:
    trigger: bool
    reason: str


def decide_retrain(verdict: str, now: float, last_trigger: float | None, cooldown_s: float,
                   busy: str | None) -> RetrainDecision:  # fmt: skip
    """Whether this check starts a retrain: only on drift, at most once per cool-down, never while
    a retrain holds the workspace (`busy`: who holds it)."""
    if verdict != drift_tests.DRIFT:
        return RetrainDecision(False, f"verdict {verdict}: nothing to do")
    if busy:
        return RetrainDecision(False, f"a retrain is already running ({busy}); not starting another")
    if last_trigger is not None and now - last_trigger < cooldown_s:
        left = cooldown_s - (now - last_trigger)
        return RetrainDecision(False, f"cooling down: a retrain was started {now - last_trigger:.0f}s ago; "
                                      f"the next may start in {left:.0f}s (monitor.cooldown_s)")  # fmt: skip
    return RetrainDecision(True, "drift detected: starting a retrain")


def workspace_busy(root: Path) -> str | None:
    """Who holds the workspace lock (a running retrain), read without taking it (so a retrain that
    starts now is never skipped because of the monitor); None when free or its holder is gone."""
    path = Path(root) / ".bertops-run.lock"
    try:
        holder = path.read_text().strip()
    except OSError:
        return None
    if not holder.startswith("pid "):
        return None
    try:
        os.kill(int(holder.split()[1]), 0)
    except (ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass  # alive, another user's
    return holder


STATE_KEY = "drift-state"  # <store>/<model>/drift-state.json: when drift last started a retrain


def plot(reference: dict, live: dict, labels: list[str], path: Path) -> None:
    """Reference against live, one panel per feature (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    style = {"reference": {"color": "#4c72b0", "alpha": 0.55}, "live": {"color": "#dd8452", "alpha": 0.55}}
    ax = axes[0][0]
    top = int(max(reference["tokens"].max(initial=1), live["tokens"].max(initial=1))) + 1
    bins = np.linspace(0, top, 30)
    for name, side in (("reference", reference), ("live", live)):
        ax.hist(side["tokens"], bins=bins, density=True, label=f"{name} (n={len(side['tokens'])})", **style[name])
    ax.set_title("input length (word pieces)")
    ax.legend()
    ax = axes[0][1]
    if len(live.get("confidence", ())) and len(reference.get("confidence", ())):
        bins = np.linspace(0.5 if len(labels) == 2 else 0.0, 1.0, 21)
        for name, side in (("reference", reference), ("live", live)):
            ax.hist(side["confidence"], bins=bins, density=True, label=name, **style[name])
        ax.legend()
    ax.set_title("confidence (top probability)")
    ax = axes[1][0]
    if len(live.get("label", ())) and len(reference.get("label", ())):
        x = np.arange(len(labels))
        for offset, (name, side) in zip((-0.2, 0.2), (("reference", reference), ("live", live))):
            shares = np.bincount(side["label"].astype(np.int64), minlength=len(labels))[: len(labels)] / len(
                side["label"]
            )
            ax.bar(x + offset, shares, width=0.4, label=name, color=style[name]["color"])
        ax.set_xticks(x, labels)
        ax.legend()
    ax.set_title("predicted label shares")
    ax = axes[1][1]
    if len(live.get("embedding", ())) and len(reference.get("embedding", ())):
        ref = reference["embedding"].astype(np.float32)
        mean = ref.mean(axis=0)
        _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
        for name, side in (("reference", ref), ("live", live["embedding"].astype(np.float32))):
            xy = (side - mean) @ vt[:2].T
            ax.scatter(xy[:, 0], xy[:, 1], s=4, label=name, color=style[name]["color"], alpha=0.4)
        ax.legend()
    ax.set_title("sentence embeddings (reference's first 2 principal axes)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def markdown(result: dict) -> str:
    report = result["report"]
    lines = [
        f"# Drift check of {result['version']}",
        "",
        f"**{report['verdict'].upper()}**: {report['message']}.",
        "",
        f"Window: the newest {report['window']} inputs the endpoint classified"
        + (f" (the windows of {len(result['workers'])} workers)" if result.get("workers") else "")
        + "; reference: "
        f"{report['reference_rows']} inputs of {result['reference'].get('source', 'the eval split')}. "
        f"alpha {report['alpha']} (per feature: p < {report['threshold']:.2g}).",
        "",
    ]
    if report["features"]:
        lines += ["| feature | test | statistic | p-value | PSI | verdict |", "| --- | --- | --- | --- | --- | --- |"]
        for f in report["features"]:
            stat = "" if f["statistic"] is None else f"{f['statistic']:.4g}"
            p = "" if f["p_value"] is None else f"{f['p_value']:.3g}"
            psi = "" if f["psi"] is None else f"{f['psi']:.3f}"
            lines.append(f"| {f['feature']} | {f['test']} | {stat} | {p} | {psi} | {f['verdict']} |")
    lines += ["", f"Retrain: {result['retrain']['reason']}."]
    if result.get("plot"):
        lines += ["", f"![reference against live]({Path(result['plot']).name})"]
    return "\n".join(lines) + "\n"


def monitor(
    config: Config,
    root: Path = Path("."),
    url: str | None = None,
    version: str | None = None,
    window_file: Path | None = None,
    build_reference: bool = False,
    now: float | None = None,
) -> dict:
    """Judge the endpoint's live window (or a saved one) against the version's reference profile."""
    from bertops.events import drift_detected
    from bertops.notify import notify

    url = (url or endpoint_url(config)).rstrip("/")
    doc = read_window_file(window_file) if window_file else fetch_window(config, url, version, config.monitor.window)
    try:
        live = decode_arrays(doc["columns"])
    except ValueError as exc:
        raise MonitorError(f"the window is malformed: {exc}") from None
    version = doc["version"]
    reference, summary, _ = reference_for(config, root, version, build_reference)
    labels = list(doc.get("labels") or summary.get("label_shares", {}).keys())
    report = drift_tests.compare(
        reference, live, labels, config.monitor.alpha, config.monitor.min_window, config.monitor.permutations,
        config.monitor.max_embedding_rows, config.monitor.seed,
    ).to_dict()  # fmt: skip
    now = time.time() if now is None else now
    from bertops.model_store import store_for

    store = store_for(config, root)  # the cool-down is the team's: shared like the versions
    state = store.read_state(config.package.model_name, STATE_KEY)
    decision = decide_retrain(report["verdict"], now, state.get("last_trigger"), config.monitor.cooldown_s,
                              workspace_busy(root))  # fmt: skip
    out = root / config.paths.reports / "monitor"
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "model": config.package.model_name,
        "version": version,
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "endpoint": None if window_file else url,
        "workers": doc.get("workers"),  # whose windows were judged together (None: one worker's own)
        "report": report,
        "reference": summary,
        "retrain": {"trigger": decision.trigger, "reason": decision.reason},
        "plot": None,
    }
    if report["features"]:
        plot(reference, live, labels, out / "drift.png")
        result["plot"] = str(out / "drift.png")
    if decision.trigger:
        result["retrain"]["event"] = drift_detected(config.package.model_name, version, report)
        result["retrain"]["notification"] = notify(
            config.notify, "drift", f"{version}: {report['message']}", model=config.package.model_name,
            version=version, drifted=report["drifted"],
        )["delivered"]  # fmt: skip
        store.write_state(config.package.model_name, STATE_KEY, {"last_trigger": now, "version": version})
    if not window_file:
        scores = {**report, "version": version, "checked_at": result["checked_at"]}
        result["shared"] = share_scores(store, config.package.model_name, scores)
        result["posted"] = post_scores(config, url, scores)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (out / "report.md").write_text(markdown(result))
    return result


def share_scores(store, name: str, scores: dict) -> bool:
    """The scores to the model store, where every worker of every replica picks them up within
    `serve.poll_s` (bertops.follow), with or without the admin token; best effort, never an error."""
    from bertops.model_store import DRIFT_REPORT_KEY, StoreError

    try:
        store.write_state(name, DRIFT_REPORT_KEY, json.loads(json.dumps(scores, default=float)))
    except StoreError:
        return False
    return True


def post_scores(config: Config, url: str, report: dict) -> bool:
    """The scores to the endpoint (Prometheus gauges); best effort, never an error."""
    import httpx

    headers = _headers(config, admin=True)
    if not headers:
        return False
    try:
        return httpx.post(f"{url}/admin/drift", json=report, headers=headers, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False
