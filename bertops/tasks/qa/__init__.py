"""Extractive question answering (SQuAD v1.1): question + context -> the answer span. The stage
hooks are this folder's modules named as the stages."""

from bertops.tasks.base import ModuleTask

TASK = ModuleTask("qa", __name__, service="service:QuestionAnswering", route="/answer")
