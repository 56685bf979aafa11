"""The one base class of the failures a user can fix: the CLI prints their message and exits 1,
the flows report them as a failed stage with that message, never as a traceback."""

from __future__ import annotations


class BertopsError(Exception):
    """A failure the user can fix; the message names what is wrong and how to fix it."""


class ConfigError(BertopsError, ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


class TransientError(BertopsError):
    """A failure a retry may fix: a source, cluster or service that could not be reached. The CLI
    exits with TRANSIENT_EXIT for it, and the flows retry the stage."""


class ClusterUnreachable(ConfigError, TransientError):
    """The Ray cluster at RAY_ADDRESS cannot be reached (now)."""


# sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry"
TRANSIENT_EXIT = 75


def is_transient(exc: BaseException) -> bool:
    """By type, never by wording: our own transient errors, and connection trouble from below
    (a missing or forbidden file is not connection trouble)."""
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError)


class PipelineError(BertopsError, RuntimeError):
    """A pipeline stage failed; carries the stage name, its own message and whether a retry may fix it."""

    def __init__(self, stage: str, message: str, transient: bool = False):
        self.stage = stage
        self.transient = transient
        super().__init__(f"stage {stage!r} failed: {message}")


# What the CLI and the flows turn into a message: every BertopsError, and a missing file (a stage
# run before the one that writes its input).
USER_ERRORS: tuple[type[BaseException], ...] = (BertopsError, FileNotFoundError)
