"""Azure OpenAI: OpenAI's wire format at a tenant's own resource, addressed by deployment.

The tenant's base URL is its resource endpoint (``https://{resource}.openai.azure.com``) and the
model name is the name of a *deployment* on that resource::

    POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}
         .../embeddings   .../audio/transcriptions   .../audio/speech
    api-key: {api_key}                       (not ``Authorization: Bearer``)

Bodies, answers, streams and error bodies are OpenAI's, so the OpenAI-compatible implementations
are reused; only where a request goes and how it is authenticated differ (``request_url`` and
``request_headers``, the hooks that :class:`providers.base.BaseModel` declares). Azure adds its content filter: a
prompt it blocks is a 400 ``{"error": {"code": "content_filter", "innererror": {...}}}`` (classified
CONTENT_FILTER by its code), a filtered answer a ``finish_reason`` of ``content_filter``.

Credential fields: ``api_key`` (secret) and ``api_version`` (not secret; default
:data:`DEFAULT_API_VERSION`, the current GA version -- text to speech may need a preview version).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from providers.base import BaseModel, CredentialField
from providers.openai_compat import (
    OpenAICompatChat,
    OpenAICompatEmbedding,
    OpenAICompatImage2Text,
    OpenAICompatSpeech2Text,
    OpenAICompatTTS,
)
from providers.registry import register

DEFAULT_API_VERSION = "2024-10-21"


class _AzureDeployment(BaseModel):
    """Where an Azure OpenAI request goes and how it is authenticated (mixed into each model type).

    The key named ``api_key`` becomes ``self.api_key``, so that what scrubs and what the
    OpenAI-compatible stream reader scrubs is the key itself, not the stored credential string.
    A plain (non-JSON) key is taken as the API key with the default API version."""

    factories = ("Azure-OpenAI",)
    default_base_url = ""  # the resource endpoint: every tenant has its own
    needs_key = True
    credential_fields = (
        CredentialField("api_key", help="the resource's KEY1 or KEY2"),
        CredentialField(
            "api_version", required=False, secret=False, help=f"REST API version (default {DEFAULT_API_VERSION})"
        ),
    )

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name, **kwargs)
        if self.credentials:
            self.api_key = self.credentials.get("api_key") or None
        self.api_version = self.credentials.get("api_version") or DEFAULT_API_VERSION

    def request_url(self, path: str) -> str:
        deployment = quote(self.model_name, safe="")
        return (
            f"{self.http_base()}/openai/deployments/{deployment}/{path}?api-version={quote(self.api_version, safe='')}"
        )

    def request_headers(self) -> dict[str, str]:
        return {"api-key": self.api_key} if self.api_key else {}


@register
class AzureOpenAIChat(_AzureDeployment, OpenAICompatChat):
    """Chat completions (with tools and streaming) on an Azure OpenAI deployment."""


@register
class AzureOpenAIImage2Text(_AzureDeployment, OpenAICompatImage2Text):
    """Image description through a vision-capable chat deployment (gpt-4o, gpt-4o-mini)."""


@register
class AzureOpenAIEmbedding(_AzureDeployment, OpenAICompatEmbedding):
    """Embeddings on an Azure OpenAI deployment (Azure takes up to 2048 inputs a request; the
    family's batch of 64 stays well inside the per-request token limits)."""


@register
class AzureOpenAISpeech2Text(_AzureDeployment, OpenAICompatSpeech2Text):
    """Whisper transcription on an Azure OpenAI deployment."""


@register
class AzureOpenAITTS(_AzureDeployment, OpenAICompatTTS):
    """Text to speech (tts-1, tts-1-hd) on an Azure OpenAI deployment."""
