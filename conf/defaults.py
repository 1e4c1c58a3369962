"""New tenants' default models, from ``conf/tenant_defaults.toml`` (or MODELYARD_TENANT_DEFAULTS)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from conf.settings import SettingsError, get_settings


@dataclass(frozen=True)
class DefaultModel:
    model_type: str
    model: str  # NAME@FACTORY
    base_url: str = ""
    api_key_env: str = ""

    def api_key(self) -> str | None:
        """The key from the environment variable the file names, if it names one and it is set."""
        return os.environ.get(self.api_key_env, "").strip() or None if self.api_key_env else None


def load_tenant_defaults() -> tuple[DefaultModel, ...]:
    path = get_settings().tenant_defaults_path
    try:
        text = (
            Path(path).read_text(encoding="utf-8")
            if path
            else (resources.files("conf").joinpath("tenant_defaults.toml").read_text(encoding="utf-8"))
        )
        raw = tomllib.loads(text)
        return tuple(
            DefaultModel(m["type"], m["model"], m.get("base_url", ""), m.get("api_key_env", ""))
            for m in raw.get("model", [])
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        where = path or "conf/tenant_defaults.toml"
        raise SettingsError(f"MODELYARD_TENANT_DEFAULTS: cannot read {where}: {type(exc).__name__}: {exc}") from None
