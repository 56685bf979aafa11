"""Packaging settings of the qa task: what its service reads at start-up."""

from __future__ import annotations

from bertops.config import Config


def serving_settings(config: Config) -> dict:
    """Task settings the service reads at start-up."""
    return {
        "doc_stride": config.prepare.doc_stride,
        "max_query_length": config.prepare.max_query_length,
        "max_answer_tokens": config.evaluate.max_answer_tokens,
    }
