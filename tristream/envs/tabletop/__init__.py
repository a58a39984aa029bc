"""The MuJoCo tabletop suite (imports MuJoCo; ``tristream.envs`` imports this lazily)."""
from tristream.envs.tabletop.env import TabletopEnv
from tristream.envs.tabletop.tasks import COLOUR_NAMES, FAMILIES, PALETTE, TEMPLATES

__all__ = ["TabletopEnv", "FAMILIES", "PALETTE", "COLOUR_NAMES", "TEMPLATES"]
