"""The Grafana dashboard in infra/ reads only series the endpoint exports."""

from __future__ import annotations

import json
import re

from tests.conftest import REPO


def test_every_series_the_dashboard_plots_is_one_the_endpoint_exports():
    dashboard = json.loads((REPO / "infra" / "grafana" / "bertops-endpoint.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bbertops_\w+", e)}
    engine = (REPO / "serving" / "engine.py").read_text()
    exported = set(re.findall(r'"(bertops_\w+)"', engine))  # counters are declared with their _total
    assert used and used <= exported, used - exported
    for drift_series in ("bertops_drift_pvalue", "bertops_drift_detected", "bertops_answers_total"):
        assert drift_series in used  # drift scores and per-version traffic are on it
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
