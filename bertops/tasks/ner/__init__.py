"""Token classification (NER, CoNLL-2003 IOB2 tags): tokens -> tags; served as entities with
character offsets. Each hook imports the module of its stage when called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertops.tasks.base import Task


class TokenClassificationTask(Task):
    name = "ner"
    service = "service:TokenTagging"
    route = "/tag"

    def validation_suite(self, config: Any, root: Path) -> Any:
        from bertops.tasks.ner.validate import validation_suite

        return validation_suite(config, root)

    def prepare(self, config: Any, root: Path) -> Any:
        from bertops.tasks.ner.prepare import prepare_ner

        return prepare_ner(config, root)

    def training_spec(self, config: Any, root: Path) -> Any:
        from bertops.tasks.ner.finetune import training_spec

        return training_spec(config, root)

    def evaluate(self, config: Any, root: Path) -> Any:
        from bertops.tasks.ner.evaluate import evaluate

        return evaluate(config, root)

    def gate_rules(self, policy: Any) -> Any:
        from bertops.tasks.ner.gate import gate_rules

        return gate_rules(policy)

    def bento_files(self) -> dict[str, Path]:
        return {"bertops_ner_core.py": Path(__file__).with_name("core.py")}


TASK = TokenClassificationTask()
