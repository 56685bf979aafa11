"""The one base class of the failures a user can fix: the CLI prints their message and exits 1,
the flows report them as a failed stage with that message, never as a traceback."""

from __future__ import annotations


class BertopsError(Exception):
    """A failure the user can fix; the message names what is wrong and how to fix it."""


class ConfigError(BertopsError, ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


class PipelineError(BertopsError, RuntimeError):
    """A pipeline stage failed; carries the stage name and its own message."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"stage {stage!r} failed: {message}")


# What the CLI and the flows turn into a message: every BertopsError, and a missing file (a stage
# run before the one that writes its input).
USER_ERRORS: tuple[type[BaseException], ...] = (BertopsError, FileNotFoundError)
