"""Sub-commands of `ci-pipeline`; every module here is discovered by :mod:`ci_pipeline.cli`."""
