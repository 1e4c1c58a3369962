"""The explicit registry of provider classes, keyed by (model type, factory name).

A family module decorates each class with :func:`register`; :func:`load_families` imports
the family modules listed in :data:`FAMILY_MODULES` (an explicit list, not a scan).
"""

from __future__ import annotations

import importlib

from providers.base import MODEL_TYPES, BaseModel

FAMILY_MODULES = (
    "providers.openai_compat",
    "providers.builtin",
    "providers.anthropic",
    "providers.ollama",
    "providers.huggingface",
    "providers.gemini",
    "providers.google_cloud",
    "providers.cohere",
    "providers.jina",
    "providers.voyage",
    "providers.bedrock",
    "providers.dashscope",
    "providers.azure_openai",
    "providers.volcengine",
    "providers.tencent",
    "providers.baidu",
)

_REGISTRY: dict[tuple[str, str], type[BaseModel]] = {}
_loaded = False


class UnsupportedModel(LookupError):
    """No provider class is registered for this (model type, factory)."""


def register(cls: type[BaseModel]) -> type[BaseModel]:
    if cls.model_type not in MODEL_TYPES:
        raise ValueError(f"{cls.__name__}: unknown model type {cls.model_type!r}")
    if not cls.factories:
        raise ValueError(f"{cls.__name__}: declares no factories")
    for factory in cls.factories:
        key = (cls.model_type, factory)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"{key} is registered twice: {_REGISTRY[key].__name__} and {cls.__name__}")
        _REGISTRY[key] = cls
    return cls


def load_families() -> None:
    global _loaded
    if not _loaded:
        for name in FAMILY_MODULES:
            importlib.import_module(name)
        _loaded = True


def get_provider_class(model_type: str, factory: str) -> type[BaseModel]:
    load_families()
    try:
        return _REGISTRY[(model_type, factory)]
    except KeyError:
        raise UnsupportedModel(f"no {model_type} provider is registered for factory {factory!r}") from None


def supported() -> dict[str, list[str]]:
    """factory -> sorted model types that have a registered class."""
    load_families()
    out: dict[str, list[str]] = {}
    for model_type, factory in _REGISTRY:
        out.setdefault(factory, []).append(model_type)
    return {f: sorted(t) for f, t in sorted(out.items())}
