"""The dashboard's story of a run: keyed Prefect artifacts rendered from the stages' reports.

Each stage writes its reports to reports/<stage>/ (JSON + markdown); after the stage, the flow
publishes what it wrote as artifacts with stable keys, so the Prefect UI shows the latest of each
and its history across runs. Pure rendering functions + one publisher.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from bertops.config import Config
from bertops.textplot import sparkline


def validation_markdown(report: dict, root: Path) -> str:
    failed = [c for c in report["checks"] if not c["success"]]
    lines = [
        f"## Data validation: {'PASSED' if report['success'] else 'FAILED'} ({report['dataset']})",
        "",
        f"- corpus version (sha256 of the ingested files): `{report['data_hash']}`",
        f"- rows: {report['rows']}",
        f"- expectations: {len(report['checks']) - len(failed)} of {len(report['checks'])} passed",
        f"- Great Expectations Data Docs: `{(root / report['data_docs']).resolve()}`",
        "",
        "| table | expectation | result | observed | unexpected rows |",
        "| --- | --- | --- | --- | ---: |",
    ]
    lines += [
        f"| {c['table']} | {c['name']} | {'pass' if c['success'] else 'FAIL'} | {c.get('observed')} | "
        f"{c.get('unexpected_count', 0)} |"
        for c in report["checks"]
    ]
    return "\n".join(lines) + "\n"


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def training_curves(reports: Path) -> tuple[list[dict], str]:
    """(table rows, markdown with rendered curves) from reports/finetune/*.csv."""
    loss = _read_csv(reports / "finetune" / "train_loss.csv")
    accuracy = _read_csv(reports / "finetune" / "validation.csv")
    metrics = (
        json.loads((reports / "finetune" / "metrics.json").read_text())
        if (reports / "finetune" / "metrics.json").is_file()
        else {}
    )
    rows = sorted(
        ({"step": int(r["step"]), "train_loss": r.get("train_loss"), "lr": r.get("lr")} for r in loss),
        key=lambda r: r["step"],
    )
    by_step = {int(r["step"]): r["validation_accuracy"] for r in accuracy}
    steps = sorted({r["step"] for r in rows} | set(by_step))
    table = [
        {
            "step": s,
            "train_loss": next((r["train_loss"] for r in rows if r["step"] == s), None),
            "validation_accuracy": by_step.get(s),
        }
        for s in steps
    ]
    losses = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    accs = [by_step[s] for s in sorted(by_step)]
    lines = [
        "## Training curves",
        "",
        f"{metrics.get('steps', '?')} steps, best validation accuracy {metrics.get('best_validation_accuracy')} "
        f"at step {metrics.get('best_step')}, {metrics.get('tokens_per_second')} tokens/s on {metrics.get('device')}"
        + (f" (resumed from step {metrics['resumed_from_step']})" if metrics.get("resumed_from_step") else ""),
        "",
        "```text",
        f"train loss          {sparkline(losses)}   {losses[0] if losses else '-'} -> {losses[-1] if losses else '-'}",
        f"validation accuracy {sparkline(accs)}   {accs[0] if accs else '-'} -> {accs[-1] if accs else '-'}",
        "```",
        "",
        "| step | train loss | validation accuracy |",
        "| ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['step']} | {'' if r['train_loss'] is None else r['train_loss']} | "
        f"{'' if r['validation_accuracy'] is None else r['validation_accuracy']} |"
        for r in table
    ]
    return table, "\n".join(lines) + "\n"


def promotion_markdown(record: dict, url: str, followed: str | None) -> str:
    return (
        "\n".join(
            [
                f"## Promoted {record['model']}:{record['version']} -> {record['stage']}",
                "",
                f"- previous production version: {record.get('previous') or 'none (first model)'}",
                f"- Bento: `{record['bento_tag']}`",
                f"- endpoint: {url} ({followed or 'not running here; `bertops serve --detach` serves this version'})",
            ]
        )
        + "\n"
    )


def pretraining_markdown(metrics: dict) -> str:
    last = metrics.get("last") or {}
    return (
        "\n".join(
            [
                f"# Pretraining: {metrics.get('preset')} ({metrics.get('parameters', 0) / 1e6:.1f}M parameters)",
                "",
                f"- steps: {metrics.get('steps')} (resumed from {metrics.get('resumed_from_step') or 'none'}), "
                f"{metrics.get('train_seconds')} s on {metrics.get('world_size')} x {metrics.get('device')} "
                f"({metrics.get('precision')})",
                f"- held-out: MLM perplexity {metrics.get('heldout_mlm_perplexity')}, MLM accuracy "
                f"{metrics.get('heldout_mlm_accuracy')}, NSP accuracy {metrics.get('heldout_nsp_accuracy')}",
                f"- last window: loss {last.get('loss')}, {last.get('tokens_per_second')} tokens/s, "
                f"MFU {last.get('mfu') or 'n/a'}",
            ]
        )
        + "\n"
    )


def publish(stage: str, config: Config, root: Path, since: float, extra: dict | None = None) -> None:
    """Publish the artifacts of `stage`, from reports written since `since` (this run)."""
    reports = root / config.paths.reports

    def fresh(rel: str) -> Path | None:
        path = reports / rel
        return path if path.is_file() and path.stat().st_mtime >= since else None

    if stage == "validate" and (path := fresh("validate/report.json")):
        create_markdown_artifact(
            key="bertops-validation",
            markdown=validation_markdown(json.loads(path.read_text()), root),
            description="Great Expectations verdict, corpus version, Data Docs",
        )
    elif stage == "pretrain" and (path := fresh("pretrain/metrics.json")):
        create_markdown_artifact(
            key="bertops-pretraining",
            markdown=pretraining_markdown(json.loads(path.read_text())),
            description="MLM + NSP pretraining: held-out metrics, throughput, MFU",
        )
    elif stage == "finetune" and fresh("finetune/metrics.json"):
        table, markdown = training_curves(reports)
        create_table_artifact(key="bertops-training-curves-table", table=table, description="training curve points")
        create_markdown_artifact(key="bertops-training-curves", markdown=markdown, description="training curves")
    elif stage == "evaluate" and (path := fresh("evaluate/summary.md")):
        create_markdown_artifact(
            key="bertops-evaluation",
            markdown=path.read_text(),
            description="metrics, confusion matrix, slices, behaviour, serving cost",
        )
    elif stage == "gate" and (path := fresh("gate/decision.md")):
        create_markdown_artifact(
            key="bertops-gate-decision",
            markdown=path.read_text(),
            description="gate decision: each check, CIs, p-values, reasons",
        )
    elif stage == "promote" and (path := fresh("promote/promote.json")):
        url = f"http://{config.serve.host}:{config.serve.port}"
        record = json.loads(path.read_text())
        create_markdown_artifact(
            key="bertops-promotion",
            markdown=promotion_markdown(record, url, (extra or {}).get("followed")),
            description="the new production version and its endpoint",
        )
        from bertops.model_store import registry_for

        history = registry_for(config, root).history(config.package.model_name)[-20:]
        create_table_artifact(
            key="bertops-registry-history",
            table=[
                {k: e[k] for k in ("when", "action", "stage", "version", "previous", "who", "reason")} for e in history
            ],
            description="the registry's latest stage changes: promotions, canaries, shadows, withdrawals, rollbacks",
        )
        create_link_artifact(
            key="bertops-endpoint",
            link=url,
            link_text=f"{record['model']}:{record['version']}",
            description="production endpoint",
        )
