"""tristream: fully asynchronous RL post-training for vision-language-action and language policies."""

__version__ = "0.1.0"
