"""ci_pipeline: an open-source customer data platform built as a Dagster batch pipeline."""

__version__ = "0.1.0"
