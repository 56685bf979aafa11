"""Classification packaging: ONNX fp32 + int8 exported into the model folder and checked against
PyTorch on the eval split; the CPU runtime the endpoint will serve."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Config
from bertops.data.prepare import (
    load_prepared,
)
from bertops.tasks.classification.prepare import model_inputs


def export_for_serving(config: Config, root: Path, model_dir: Path) -> dict:
    """Export ONNX fp32 + int8 into the model folder and check both against PyTorch on the eval
    split; pick the CPU runtime. A runtime asked for by name that failed its check is refused."""
    from bertops.models.export import ExportCheckFailed
    from bertops.models.export import export_for_serving as export

    frames, _, _ = load_prepared(config, root)
    evals = frames["eval"]
    serve = config.serve
    report = export(
        model_dir,
        model_inputs(evals),
        evals["label"].to_numpy(),
        config.prepare.max_length,
        serve.onnx_max_abs_diff,
        serve.int8_max_accuracy_drop,
    )
    passed = [r for r in ("onnx-int8", "onnx") if report["runtimes"][r]["passed"]]
    if serve.runtime in ("onnx-int8", "onnx") and serve.runtime not in passed:
        detail = report["runtimes"][serve.runtime]
        raise ExportCheckFailed(
            f"serve.runtime={serve.runtime} failed its agreement check with PyTorch (max |logit diff| "
            f"{detail['max_abs_logit_diff']:.2e}, accuracy {detail['accuracy']:.4f} vs "
            f"{report['torch_accuracy']:.4f}); "
            f"it is not served. Use serve.runtime=auto or torch"
        )
    report["cpu_runtime"] = serve.runtime if serve.runtime != "auto" else (passed[0] if passed else "torch")
    return report


def serving_settings(config: Config) -> dict:
    """Task settings the service reads at start-up."""
    return {"text_pairs": bool(config.ingest.text_pair_column)}
