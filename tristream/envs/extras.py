"""Optional simulator packages (``pip install tristream[metaworld]``, ``tristream[libero]``).

Their env modules import the package through ``require`` so a missing extra fails with the install line
instead of a bare ModuleNotFoundError deep inside a worker process.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError, ValueError):
    """An optional simulator package is not installed (a ValueError too, so the CLI prints it as bad input)."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError naming ``pip install 'tristream[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{what} needs the optional package {module!r}, which is not installed ({e}). "
            f"Install it with: pip install 'tristream[{extra}]'  (from a checkout: pip install -e '.[{extra}]')"
        ) from e
