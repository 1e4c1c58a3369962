"""VolcEngine Ark (火山方舟): OpenAI's wire format at ``https://ark.cn-beijing.volces.com/api/v3``.

::

    POST {base}/chat/completions   {"model": "ep-20240604xxxxxx-xxxxx" | "doubao-...", "messages", ...}
    POST {base}/embeddings         {"model", "input": [...], "encoding_format": "float"}
    Authorization: Bearer {ark_api_key}

The request's ``model`` is the tenant's inference *endpoint* id (``ep-...``) when one is given:
Ark bills and rate-limits by endpoint, and accounts that may not call a model by its id must. The
catalog's model name is then for display only.

Errors are OpenAI-shaped, ``{"error": {"code", "message", "param", "type"}}``, with Ark's own codes
(``AuthenticationError``, ``RateLimitExceeded.EndpointRPMExceeded``, ``ServerOverloaded`` (a 429
that is the server's load, not ours), ``QuotaExceeded``, ``AccountOverdueError``, ...), which
``providers.errors`` classifies.

Credential fields: ``ark_api_key`` (secret), ``endpoint_id`` (optional, not secret). A plain
(non-JSON) key is taken as the Ark API key.
"""

from __future__ import annotations

from typing import Any

from providers.base import BaseModel, CredentialField
from providers.openai_compat import (
    OpenAICompatChat,
    OpenAICompatEmbedding,
    OpenAICompatImage2Text,
)
from providers.registry import register


class _ArkEndpoint(BaseModel):
    """The Ark key and endpoint id from the credential: ``self.api_key`` becomes the Ark key (sent
    as the Bearer token and scrubbed), ``self.model_name`` the endpoint id when one is set."""

    factories = ("VolcEngine",)
    default_base_url = "https://ark.cn-beijing.volces.com/api/v3"
    needs_key = True
    credential_fields = (
        CredentialField("ark_api_key", help="Ark API key"),
        CredentialField(
            "endpoint_id", required=False, secret=False, help="inference endpoint id (ep-...); default: the model name"
        ),
    )

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name, **kwargs)
        if self.credentials:
            self.api_key = self.credentials.get("ark_api_key") or None
        self.model_name = self.credentials.get("endpoint_id") or model_name


@register
class VolcEngineChat(_ArkEndpoint, OpenAICompatChat):
    """Doubao (and hosted DeepSeek, ...) chat on Ark, with tools and streaming."""


@register
class VolcEngineImage2Text(_ArkEndpoint, OpenAICompatImage2Text):
    """Image description through a vision endpoint (doubao-vision)."""


@register
class VolcEngineEmbedding(_ArkEndpoint, OpenAICompatEmbedding):
    """Doubao text embeddings on Ark."""

    batch_size = 16
