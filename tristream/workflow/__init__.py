"""The user's workflow: collect demos -> SFT -> RL -> evaluate, and the default recipe chaining them."""
