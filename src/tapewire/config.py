"""The user's config file: TOML, read with `tomllib`, at `TAPEWIRE_CONFIG` or the platform's
config directory (`~/.config/tapewire/config.toml` on Linux). Absent is empty: every setting
has a default. A file that does not parse is an error that names the file."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import platformdirs

ENV = "TAPEWIRE_CONFIG"


class ConfigError(ValueError):
    pass


def config_path() -> Path:
    explicit = os.environ.get(ENV)
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir("tapewire")) / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def section(name: str, path: Path | None = None) -> dict[str, Any]:
    """One table of the config file (`[analysis]`, say), empty when absent."""
    value = load_config(path).get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path or config_path()}: [{name}] must be a table")
    return value
