"""The bertops pipeline as one Prefect 3 flow: each task is one stage, named as the stage.

Two executors run the same stages:
- `dvc`: each task runs `dvc repro STAGE` (DVC decides what is stale, versions data and models,
  records dvc.lock); used when the run is configured by params.yaml alone;
- `direct`: each task calls the stage's bertops function in-process with the given config
  (a profile and/or dotted overrides); used for tests and quick experiments.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from bertops.config import Config, load_config
from bertops.errors import PipelineError

STAGES = ("ingest", "validate", "prepare", "finetune", "evaluate", "gate", "package", "promote")


@dataclass
class RunContext:
    params: str
    profile: str | None
    overrides: list[str]
    executor: str
    root: str = "."

    def config(self) -> Config:
        return load_config(self.params, self.profile, self.overrides)


def _direct(stage: str) -> Callable[[Config, Path], Any]:
    from bertops.data.prepare import prepare
    from bertops.data.sources import ingest
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate
    from bertops.packaging import GateRejected, package, promote
    from bertops.training.run import train

    def promote_and_follow(config: Config, root: Path):
        from bertops import server

        record = promote(config, root)
        server.follow_registry(config)  # a running endpoint switches to the new production version
        return record

    def gate_or_raise(config: Config, root: Path):
        decision = gate(config, root)
        if not decision.approved:
            raise GateRejected("gate rejected the model: " + "; ".join(decision.reasons))
        return decision

    return {"ingest": ingest, "validate": validate, "prepare": prepare, "finetune": train, "evaluate": evaluate,
            "gate": gate_or_raise, "package": package, "promote": promote_and_follow}[stage]


def _stream(args: list[str], cwd: Path, env: dict) -> tuple[int, str]:
    """Run a command, passing its output through live (progress bars included) and keeping a copy."""
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kept = bytearray()
    sink = getattr(sys.stderr, "buffer", None)
    while chunk := process.stdout.read1(4096):
        if sink is not None:
            sink.write(chunk)
        else:
            sys.stderr.write(chunk.decode("utf-8", errors="replace"))
        sys.stderr.flush()
        kept += chunk
    return process.wait(), kept.decode("utf-8", errors="replace")


def _execute(stage: str, ctx: RunContext) -> str:
    """Run one stage with the chosen executor; returns "ran" or "cached" (DVC skipped it)."""
    root = Path(ctx.root)
    if ctx.executor == "dvc":
        # dvc.yaml's commands call `bertops`: make this interpreter's scripts win on PATH.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        returncode, output = _stream([sys.executable, "-m", "dvc", "repro", "--single-item", stage], root, env)
        if returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-25:])
            raise PipelineError(stage, tail)
        return "cached" if "didn't change, skipping" in output or "is cached" in output else "ran"
    from bertops.errors import USER_ERRORS

    try:
        _direct(stage)(ctx.config(), root)
    except USER_ERRORS as exc:
        raise PipelineError(stage, str(exc)) from None
    return "ran"


# Reports shown on the Prefect dashboard as keyed markdown artifacts after their stage ran (or failed).
STAGE_ARTIFACTS = {
    "evaluate": ("bertops-evaluation", "evaluate/summary.md", "Evaluation: metrics, slices, behaviour, serving cost"),
    "gate": ("bertops-gate-decision", "gate/decision.md", "Gate decision with each check, CI and p-value"),
}


def publish_stage_artifact(stage: str, ctx: RunContext, since: float) -> None:
    if stage not in STAGE_ARTIFACTS:
        return
    key, rel, description = STAGE_ARTIFACTS[stage]
    path = Path(ctx.root) / ctx.config().paths.reports / rel
    if path.is_file() and path.stat().st_mtime >= since:  # written by this run, not left from an earlier one
        create_markdown_artifact(key=key, markdown=path.read_text(), description=description)


def _stage_task(stage: str, retries: int = 0, doc: str = ""):
    def run(ctx: RunContext) -> tuple[str, float, str]:
        logger = get_run_logger()
        started, wall = time.perf_counter(), time.time()
        try:
            outcome = _execute(stage, ctx)
        finally:
            publish_stage_artifact(stage, ctx, wall - 1)
        seconds = time.perf_counter() - started
        logger.info("%s %s in %.1fs", stage, outcome, seconds)
        return stage, seconds, outcome

    run.__doc__ = doc
    return task(name=stage, retries=retries, retry_delay_seconds=5, cache_policy=NO_CACHE)(run)


ingest_task = _stage_task("ingest", retries=2, doc="Copy the corpus into data/raw (retried: sources can be flaky).")
validate_task = _stage_task("validate", doc="Great Expectations suite; a failure ends the run.")
prepare_task = _stage_task("prepare", doc="Normalise, de-duplicate, split, tokenize.")
finetune_task = _stage_task("finetune", doc="Fine-tune the encoder (this process or Ray workers).")
evaluate_task = _stage_task("evaluate", doc="Metrics on the held-out split.")
gate_task = _stage_task("gate", doc="Approve or reject against params.yaml thresholds.")
package_task = _stage_task("package", doc="BentoML model + Bento; registry candidate.")
promote_task = _stage_task("promote", doc="Registry: the new version becomes production.")
TASKS = (ingest_task, validate_task, prepare_task, finetune_task, evaluate_task, gate_task, package_task, promote_task)


def timing_table(timings: list[tuple[str, float, str]]) -> str:
    lines = ["| stage | seconds | outcome |", "| --- | ---: | --- |"]
    lines += [f"| {stage} | {seconds:.1f} | {outcome} |" for stage, seconds, outcome in timings]
    lines.append(f"| total | {sum(t[1] for t in timings):.1f} | |")
    return "\n".join(lines)


def run_summary(config: Config, root: Path, timings, started: float) -> str:
    """Markdown for the Prefect artifact: data version, validation, metrics, gate, promoted version.

    Only reports that this run wrote (or that DVC kept because nothing changed) are shown;
    a stage the run never reached reads as "not reached"."""
    reports = root / config.paths.reports
    reached = {stage for stage, _, _ in timings}

    def read(rel: str) -> dict:
        path = reports / rel
        stage = rel.split("/")[0]
        if not path.is_file() or (stage not in reached and path.stat().st_mtime < started):
            return {}
        return json.loads(path.read_text())

    validation, metrics = read("validate/report.json"), read("evaluate/metrics.json")
    decision, promoted = read("gate/decision.json"), read("promote/promote.json")
    lines = [
        f"# bertops run: {config.ingest.dataset}", "",
        f"- data version (sha256): `{validation.get('data_hash', '?')}`",
        f"- validation: {('passed' if validation.get('success') else 'FAILED') if validation else 'not reached'} "
        f"({len(validation.get('checks', []))} expectations, rows {validation.get('rows')})",
        f"- eval metrics: accuracy {metrics.get('accuracy')}, macro-F1 {metrics.get('macro_f1')}, ECE {metrics.get('ece')}",
        f"- gate: {('approved' if decision.get('approved') else 'rejected') if decision else 'not reached'} "
        f"{decision.get('reasons') or ''}",
        f"- promoted: {promoted.get('model', '-')}:{promoted.get('version', '-')} -> {promoted.get('stage', '-')}",
        "", "## Stage timings", "", timing_table(timings),
    ]
    return "\n".join(lines) + "\n"


@flow(name="bertops-pipeline", log_prints=True)
def pipeline(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None,
             executor: str = "auto", root: str = ".") -> dict:
    """ingest -> validate -> prepare -> finetune -> evaluate -> gate -> package -> promote."""
    overrides = list(overrides or [])
    if executor not in ("auto", "dvc", "direct"):
        raise PipelineError("run", f"unknown executor {executor!r}; choose one of auto, dvc, direct")
    # dvc repro reads <root>/params.yaml and nothing else.
    plain = not profile and not overrides and Path(params).resolve() == Path(root, "params.yaml").resolve()
    if executor == "auto":
        executor = "dvc" if plain and Path(root, "dvc.yaml").is_file() else "direct"
    if executor == "dvc" and not plain:
        raise PipelineError("run", "the dvc executor reads params.yaml only; edit it, or use --executor direct "
                                   "for another params file, a profile or overrides")
    started = time.time()
    ctx = RunContext(params, profile, overrides, executor, root)
    config = ctx.config()
    get_run_logger().info("executor: %s", executor)
    timings: list[tuple[str, float, str]] = []
    try:
        for stage_task in TASKS:
            timings.append(stage_task(ctx))
    finally:
        table = timing_table(timings)
        create_markdown_artifact(key="bertops-run-summary", markdown=run_summary(config, Path(root), timings, started),
                                 description=f"bertops pipeline run on {config.ingest.dataset}")
        print(table)
    return {"ok": True, "executor": executor, "timings": timings, "timing_table": table}
