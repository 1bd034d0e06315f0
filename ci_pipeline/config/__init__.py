"""The typed project configuration and its loader."""

from ci_pipeline.config.base import SecretRef, StrictModel, resolve_secret
from ci_pipeline.config.model import (
    CONFIG_ENV,
    SAMPLE_CONFIG,
    ProjectConfig,
    config_path,
    is_url,
    load_config,
)

__all__ = [
    "CONFIG_ENV",
    "SAMPLE_CONFIG",
    "ProjectConfig",
    "SecretRef",
    "StrictModel",
    "config_path",
    "is_url",
    "load_config",
    "resolve_secret",
]
