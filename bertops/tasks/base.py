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
| package   | (the drift reference profile) | `monitor_inputs`                       |

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
        """Put the runtime the gate judged into the packaged model folder; the report names it
        (`runtime`) and, for a file other than the weights, where it is and its sha256
        (`runtimes[runtime]["file"/"sha256"]`). Default: PyTorch, served as trained."""
        return {
            "runtime": "torch",
            "runtimes": {},
            "note": f"no ONNX export for {self.name} models: served by PyTorch",
        }

    def serving_settings(self, config: Any) -> dict:
        """Task settings the service reads at start-up (beside the generic ones)."""
        return {}

    def monitor_inputs(self, config: Any, root: Path) -> list | None:
        """The eval split's inputs as the endpoint receives them, for the version's drift reference
        profile (bertops.monitoring.reference). Default: None, no profile."""
        return None

    def bento_files(self) -> dict[str, Path]:
        """Extra files the Bento carries: {name in the Bento: source file} (the task's pure core)."""
        return {}


class ModuleTask(Task):
    """A task whose hooks live in its own stage modules, named as the stages, each imported only
    when its hook is called (a stage loads, and DVC tracks, only its own part of the task):

    | hook | function |
    | --- | --- |
    | validation_suite | `<package>.validate.validation_suite` |
    | prepare | `<package>.prepare.prepare` |
    | training_spec | `<package>.finetune.training_spec` |
    | evaluate | `<package>.evaluate.evaluate` |
    | gate_rules | `<package>.gate.gate_rules` |
    | export_for_serving, serving_settings, monitor_inputs | `<package>.package.<same name>` (optional) |

    The task's pure core is `<package>.core`, carried into the Bento as `bertops_<name>_core.py`.
    """

    def __init__(self, name: str, package: str, service: str, route: str) -> None:
        self.name, self.package, self.service, self.route = name, package, service, route

    def _hook(self, module: str, function: str, required: bool = True) -> Any:
        import importlib

        try:
            found = importlib.import_module(f"{self.package}.{module}")
        except ModuleNotFoundError as exc:
            if required or exc.name != f"{self.package}.{module}":
                raise
            return None
        if not hasattr(found, function) and required:
            raise NotImplementedError(f"task {self.name!r}: {self.package}.{module} defines no {function}()")
        return getattr(found, function, None)

    def validation_suite(self, config: Any, root: Path) -> Any:
        return self._hook("validate", "validation_suite")(config, root)

    def prepare(self, config: Any, root: Path) -> Any:
        return self._hook("prepare", "prepare")(config, root)

    def training_spec(self, config: Any, root: Path) -> Any:
        return self._hook("finetune", "training_spec")(config, root)

    def evaluate(self, config: Any, root: Path) -> Any:
        return self._hook("evaluate", "evaluate")(config, root)

    def gate_rules(self, policy: Any) -> Any:
        return self._hook("gate", "gate_rules")(policy)

    def export_for_serving(self, config: Any, root: Path, model_dir: Path) -> dict:
        export = self._hook("package", "export_for_serving", required=False)
        return export(config, root, model_dir) if export else super().export_for_serving(config, root, model_dir)

    def serving_settings(self, config: Any) -> dict:
        settings = self._hook("package", "serving_settings", required=False)
        return settings(config) if settings else {}

    def monitor_inputs(self, config: Any, root: Path) -> list | None:
        inputs = self._hook("package", "monitor_inputs", required=False)
        return inputs(config, root) if inputs else None

    def bento_files(self) -> dict[str, Path]:
        import importlib.util

        spec = importlib.util.find_spec(f"{self.package}.core")
        return {f"bertops_{self.name}_core.py": Path(spec.origin)} if spec and spec.origin else {}
