"""Configuration files under config/: topology (ports and paths), users, limits."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict, with an error that names the file when it is missing or invalid."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from None


def topology(path: Path | None = None) -> dict[str, Any]:
    """The process map (config/topology.toml): ports, paths, feed defaults."""
    return load_toml(path or CONFIG_DIR / "topology.toml")
