"""Great Expectations 1.x adapter: turns `Check` records into a GX suite per table, runs them
through checkpoints in a file-backed context (so Data Docs HTML is written), and hands back
plain `CheckResult`s. The only module that imports great_expectations.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from bertops.data.checks import Check, CheckResult, offending_examples


def run_checks(
    checks: list[Check],
    tables: dict[str, pd.DataFrame],
    context_dir: Path,  # must end in /gx (GX's own folder name)
    example_columns: list[str],
    examples_per_failure: int,
) -> tuple[list[CheckResult], Path | None]:
    """Validate every table against its checks; returns results (in check order) and Data Docs index."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # GX keeps its project in <project_root>/gx; one run = one fresh site (DVC versions history).
    project_root = context_dir.parent
    if context_dir.exists():
        shutil.rmtree(context_dir)
    project_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(project_root))
    # GX annotates the setter as ProgressBarsConfig but reads it dict-style (Validator._determine_progress_bars).
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}  # type: ignore[assignment]
    source = context.data_sources.add_pandas("corpus")

    results: dict[int, CheckResult] = {}
    for table, frame in tables.items():
        table_checks = [(i, c) for i, c in enumerate(checks) if c.table == table]
        if not table_checks:
            continue
        suite = gx.ExpectationSuite(name=f"corpus-{table}")
        for i, check in table_checks:
            expectation = getattr(gx.expectations, check.kind)(
                **check.kwargs, meta={"bertops_check": i, "name": check.name}
            )
            suite.add_expectation(expectation)
        suite = context.suites.add(suite)
        batch = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe(table)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"validate-{table}",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs")],
                result_format={"result_format": "COMPLETE"},
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frame})
        for validation in run.run_results.values():
            for item in validation.results:
                assert item.expectation_config is not None  # GX fills it in for every result of a suite run
                index = item.expectation_config.meta["bertops_check"]
                results[index] = _to_result(checks[index], item, frame, example_columns, examples_per_failure)

    docs = context_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"
    ordered = [results[i] for i in sorted(results)]
    return ordered, docs if docs.exists() else None


def _to_result(check: Check, item, frame: pd.DataFrame, columns: list[str], limit: int) -> CheckResult:
    result = item.result or {}
    column = check.kwargs.get("column")
    observed = result.get("observed_value")
    if item.exception_info and item.exception_info.get("raised_exception"):
        observed = "column missing" if column and column not in frame.columns else "could not be evaluated"
    if observed is None and "mostly" in check.kwargs and result.get("unexpected_percent") is not None:
        share = float(result["unexpected_percent"]) / 100
        observed = f"share {share:.4f} (allowed {1 - check.kwargs['mostly']:.4f})"
    indices = result.get("unexpected_index_list") or []
    examples = []
    if indices and not item.success:
        if check.table in ("train", "eval"):
            examples = offending_examples(frame, list(indices), columns, limit)
        else:
            examples = [frame.loc[i].to_dict() for i in list(indices)[:limit] if i in frame.index]
    return CheckResult(
        table=check.table,
        name=check.name,
        expectation=check.kind,
        success=bool(item.success),
        observed=observed if isinstance(observed, (int, float, str, bool, type(None))) else str(observed),
        unexpected_count=int(result.get("unexpected_count") or 0),
        examples=examples,
    )
