"""The failures a user can fix, gathered so the CLI and flows report them as messages, not tracebacks."""
from __future__ import annotations

from bertops.config import ConfigError
from bertops.data.sources import DataSourceError
from bertops.data.validation import ValidationFailed
from bertops.evaluation.behaviour import BehaviourCasesError
from bertops.evaluation.gate import IncompleteReport
from bertops.lineage import ArtifactMismatch
from bertops.models.export import ExportCheckFailed
from bertops.packaging import GateRejected
from bertops.registry import RegistryError
from bertops.server import ServeError

class PipelineError(RuntimeError):
    """A pipeline stage failed; carries the stage name and its own message."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"stage {stage!r} failed: {message}")


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DataSourceError, ValidationFailed, ArtifactMismatch, GateRejected, RegistryError, ServeError,
    FileNotFoundError, PipelineError, IncompleteReport, BehaviourCasesError,
    ExportCheckFailed,
)

