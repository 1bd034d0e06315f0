"""Sample data generator: a realistic retail data set with noise, a matching configuration and ground truth."""

from ci_pipeline.generate.dataset import DEFAULT_AS_OF, SECTIONS, assemble_config, generate, write_config

__all__ = ["DEFAULT_AS_OF", "SECTIONS", "assemble_config", "generate", "write_config"]
