"""Extractive question answering (SQuAD v1.1): question + context -> the answer span."""

from bertops.tasks.qa.stages import QuestionAnsweringTask

TASK = QuestionAnsweringTask()
