"""bertops: an MLOps platform for BERT models (validate -> prepare -> train -> gate -> serve)."""

__version__ = "0.1.0"
