"""Config: the typed tree (schema.py), presets (presets/*.yaml), loading (loader.py) and typed conversion with validation (convert.py)."""
from tristream.config.loader import ConfigError, config_from_dict, describe, load_config, save_config, to_dict
from tristream.config.schema import Config

__all__ = ["Config", "ConfigError", "config_from_dict", "describe", "load_config", "save_config", "to_dict"]
