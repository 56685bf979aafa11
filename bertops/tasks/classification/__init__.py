"""Sequence classification: one text, or a sentence pair, -> one label (SST-2, RTE, ...)."""

from bertops.tasks.classification.stages import ClassificationTask

TASK = ClassificationTask()
