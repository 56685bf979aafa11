"""Extractive question answering (SQuAD v1.1): question + context -> the answer span. Each hook
imports the module of its stage when called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertops.tasks.base import Task


class QuestionAnsweringTask(Task):
    name = "qa"
    service = "service:QuestionAnswering"
    route = "/answer"

    def validation_suite(self, config: Any, root: Path) -> Any:
        from bertops.tasks.qa.validate import validation_suite

        return validation_suite(config, root)

    def prepare(self, config: Any, root: Path) -> Any:
        from bertops.tasks.qa.prepare import prepare_qa

        return prepare_qa(config, root)

    def training_spec(self, config: Any, root: Path) -> Any:
        from bertops.tasks.qa.finetune import training_spec

        return training_spec(config, root)

    def evaluate(self, config: Any, root: Path) -> Any:
        from bertops.tasks.qa.evaluate import evaluate

        return evaluate(config, root)

    def gate_rules(self, policy: Any) -> Any:
        from bertops.tasks.qa.gate import gate_rules

        return gate_rules(policy)

    def serving_settings(self, config: Any) -> dict:
        from bertops.tasks.qa.package import serving_settings

        return serving_settings(config)

    def bento_files(self) -> dict[str, Path]:
        return {"bertops_qa_core.py": Path(__file__).with_name("core.py")}


TASK = QuestionAnsweringTask()
