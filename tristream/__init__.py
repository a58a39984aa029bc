"""tristream: fully asynchronous RL post-training for vision-language-action and language policies."""

from tristream.registry import register_env, register_policy

__version__ = "0.1.0"
__all__ = ["register_env", "register_policy", "__version__"]
