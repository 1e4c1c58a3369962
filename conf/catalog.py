"""The provider/model catalog shipped in ``conf/llm_factories.json``.

A model is named ``llm_name@factory``; the llm name itself may contain ``@`` or ``/``, so
the factory is whatever follows the last ``@``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class CatalogModel:
    name: str
    factory: str
    model_types: tuple[str, ...]
    max_tokens: int
    is_tools: bool
    tags: tuple[str, ...]
    batch_size: int | None = None
    dimensions: int | None = None

    @property
    def full_name(self) -> str:
        return f"{self.name}@{self.factory}"


@dataclass(frozen=True)
class CatalogFactory:
    name: str
    tags: tuple[str, ...]
    base_url: str
    rank: int
    internal: bool
    models: tuple[CatalogModel, ...]
    key_url: str = ""  # where the provider issues API keys, where known


def split_model_name(full_name: str) -> tuple[str, str]:
    """``"text-embedding-3-small@OpenAI"`` -> ``("text-embedding-3-small", "OpenAI")``."""
    name, sep, factory = full_name.rpartition("@")
    if not sep or not name or not factory:
        raise ValueError(f"model must be written NAME@FACTORY, got {full_name!r}")
    return name, factory


@functools.lru_cache(maxsize=1)
def load_catalog() -> tuple[CatalogFactory, ...]:
    raw = json.loads(resources.files("conf").joinpath("llm_factories.json").read_text(encoding="utf-8"))
    factories = []
    for f in raw["factories"]:
        models = tuple(
            CatalogModel(
                name=m["name"],
                factory=f["name"],
                model_types=tuple(m["model_types"]),
                max_tokens=int(m.get("max_tokens") or 0),
                is_tools=bool(m.get("is_tools", False)),
                tags=tuple(m.get("tags", ())),
                batch_size=m.get("batch_size"),
                dimensions=m.get("dimensions"),
            )
            for m in f["models"]
        )
        factories.append(
            CatalogFactory(
                name=f["name"],
                tags=tuple(f.get("tags", ())),
                base_url=f.get("base_url", ""),
                rank=int(f.get("rank") or 0),
                internal=bool(f.get("internal", False)),
                models=models,
                key_url=f.get("key_url", ""),
            )
        )
    return tuple(factories)


def find_model(full_name: str) -> CatalogModel | None:
    name, factory = split_model_name(full_name)
    for f in load_catalog():
        if f.name == factory:
            return next((m for m in f.models if m.name == name), None)
    return None


@functools.lru_cache(maxsize=1)
def catalog_prices() -> dict[str, dict[str, float]]:
    """Published USD-per-token prices by model name (``conf/prices.json``, see conf.price_import)."""
    raw = json.loads(resources.files("conf").joinpath("prices.json").read_text(encoding="utf-8"))
    return raw["prices"]
