"""The corpus: ingest from local copies or the hub, validation (Great Expectations), preparation."""
