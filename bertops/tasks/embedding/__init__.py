"""Embedding-only versions: a sentence encoder served with no task head (`/embed`,
`/v1/embeddings`, `/tokenize`). Such a version is not trained by the pipeline: `bertops package
--embedding-only [--encoder SOURCE]` exports, scores and gates an encoder (bertops.packaging.
package_embedding), and the `Embedding` service serves it; another model may name it in
`serve.embedding_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertops.errors import ConfigError
from bertops.tasks.base import Task


class EmbeddingTask(Task):
    name = "embedding"
    service = "service:Embedding"
    route = "/embed"

    def _no_stage(self, stage: str) -> ConfigError:
        return ConfigError(
            f"the embedding task has no {stage} stage: an embedding-only version is packaged from an encoder "
            "with `bertops package --embedding-only [--encoder SOURCE]`"
        )

    def validation_suite(self, config: Any, root: Path) -> Any:
        raise self._no_stage("validate")

    def prepare(self, config: Any, root: Path) -> Any:
        raise self._no_stage("prepare")

    def training_spec(self, config: Any, root: Path) -> Any:
        raise self._no_stage("finetune")

    def evaluate(self, config: Any, root: Path) -> Any:
        raise self._no_stage("evaluate")

    def gate_rules(self, policy: Any) -> Any:
        raise self._no_stage("gate")


TASK = EmbeddingTask()
