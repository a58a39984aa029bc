"""The small from-scratch VLA policy: config.py (VLAConfig), model.py (VLAPolicy), heads, encoders, tokenizer."""
from .config import VLAConfig
from .heads import DiscreteTokenHead, GaussianChunkHead
from .model import VLAPolicy, make_vla_policy
from .tokenizer import Tokenizer

__all__ = ["VLAConfig", "VLAPolicy", "make_vla_policy", "GaussianChunkHead", "DiscreteTokenHead", "Tokenizer"]
