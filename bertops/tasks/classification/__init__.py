"""Sequence classification: one text, or a sentence pair (`ingest.text_pair_column`), -> one label
(SST-2, RTE, ...). Each hook imports the module of its stage when called, so a stage reads (and
DVC tracks) only its own part of the task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertops.tasks.base import Task


class ClassificationTask(Task):
    name = "classification"
    service = "service:Classification"
    route = "/classify"

    def validation_suite(self, config: Any, root: Path) -> Any:
        from bertops.tasks.classification.validate import validation_suite

        return validation_suite(config, root)

    def prepare(self, config: Any, root: Path) -> Any:
        from bertops.tasks.classification.prepare import prepare

        return prepare(config, root)

    def training_spec(self, config: Any, root: Path) -> Any:
        from bertops.tasks.classification.finetune import training_spec

        return training_spec(config, root)

    def evaluate(self, config: Any, root: Path) -> Any:
        from bertops.tasks.classification.evaluate import evaluate

        return evaluate(config, root)

    def gate_rules(self, policy: Any) -> Any:
        from bertops.tasks.classification.gate import gate_rules

        return gate_rules(policy)

    def export_for_serving(self, config: Any, root: Path, model_dir: Path) -> dict:
        from bertops.tasks.classification.package import export_for_serving

        return export_for_serving(config, root, model_dir)

    def serving_settings(self, config: Any) -> dict:
        from bertops.tasks.classification.package import serving_settings

        return serving_settings(config)

    def bento_files(self) -> dict[str, Path]:
        return {"bertops_classification_core.py": Path(__file__).with_name("core.py")}


TASK = ClassificationTask()
