"""`Task`: the one interface every task implements, so that the generic stages hold no task code.

A task is one folder, `bertops/tasks/<name>/`, with a pure `core.py` (no bertops imports: it is
copied into the Bento as it is) and `stages.py`, whose hooks the generic stages call:

| stage     | generic module (the stage)    | the task's hook                        |
| --------- | ----------------------------- | -------------------------------------- |
| validate  | bertops/data/validation.py    | `validation_suite` (checks + tables)   |
| prepare   | bertops/data/prepare.py       | `prepare`                              |
| finetune  | bertops/training/finetune.py  | `training_spec` (model, targets, score) |
| evaluate  | bertops/evaluation/evaluate.py| `evaluate` (metrics, serving cost, summary) |
| gate      | bertops/evaluation/gate.py    | `gate_rules`                           |
| package   | bertops/packaging.py          | `export_for_serving`, `serving_settings`, `service`, `bento_files` |

The hooks return the generic modules' own types (`ValidationSuite`, `PrepareResult`,
`TrainingSpec`, `Evaluation`, `GateRules`); this module imports none of them, so the interface
sits below every stage and above nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Task:
    """Override every hook a task needs; the defaults say what a task without it gets."""

    #: the value of `ingest.task`
    name: str = ""
    #: "module:Class" of the BentoML service that serves this task (module in serving/ or in bento_files)
    service: str = ""
    #: the endpoint's task-specific route, for messages ("/classify", "/tag", ...)
    route: str = ""

    def validation_suite(self, config: Any, root: Path) -> Any:
        """The GX checks and the tables they run on (`bertops.data.validation.ValidationSuite`)."""
        raise NotImplementedError(f"task {self.name!r} defines no validation suite")

    def prepare(self, config: Any, root: Path) -> Any:
        """Raw corpus -> data/prepared/<dataset>/ (`bertops.data.prepare.PrepareResult`)."""
        raise NotImplementedError(f"task {self.name!r} defines no prepare step")

    def training_spec(self, config: Any, root: Path) -> Any:
        """What the shared loop trains (`bertops.training.loop.TrainingSpec`)."""
        raise NotImplementedError(f"task {self.name!r} defines no training spec")

    def evaluate(self, config: Any, root: Path) -> Any:
        """Scores on the eval split, serving cost, champion re-score (`bertops.evaluation.evaluate.Evaluation`)."""
        raise NotImplementedError(f"task {self.name!r} defines no evaluation")

    def gate_rules(self, policy: Any) -> Any:
        """Which floors and which champion comparison the gate applies (`bertops.evaluation.gate.GateRules`)."""
        raise NotImplementedError(f"task {self.name!r} defines no gate rules")

    def export_for_serving(self, config: Any, root: Path, model_dir: Path) -> dict:
        """Export faster runtimes into the packaged model folder and check them; default: PyTorch only."""
        return {
            "cpu_runtime": "torch",
            "runtimes": {},
            "note": f"no ONNX export for {self.name} models: served by PyTorch",
        }

    def serving_settings(self, config: Any) -> dict:
        """Task settings the service reads at start-up (beside the generic ones)."""
        return {}

    def bento_files(self) -> dict[str, Path]:
        """Extra files the Bento carries: {name in the Bento: source file} (the task's pure core)."""
        return {}
