"""Language policies: a JoyAI-LLM-Flash-style sparse MoE decoder (MLA, aux-loss-free routing, dense MTP)."""
