"""Sequence classification: one text, or a sentence pair (`ingest.text_pair_column`), -> one label
(SST-2, RTE, ...). The stage hooks are this folder's modules named as the stages."""

from bertops.tasks.base import ModuleTask

TASK = ModuleTask("classification", __name__, service="service:Classification", route="/classify")
