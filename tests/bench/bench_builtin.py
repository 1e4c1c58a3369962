"""Throughput of the Builtin embedding model (numpy MiniLM) next to sentence-transformers on torch CPU.

Run from the project root::

    python -m tests.bench.bench_builtin [--texts 1000] [--repeats 3]

All sides embed the same deterministic texts (5 to 60 words each) in one process: our model in
one call, our provider as a worker calls it (batches of 64), and the reference. Each is warmed
up, then the sides take turns ``--repeats`` times, so that all see the same machine load, and
each side's fastest run counts. The reference needs torch and sentence-transformers
(``pip install -e '.[bench-torch]'``); without them only our numbers are printed. numpy's BLAS
kernel depends on OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE where a machine sets them: the numbers
are for the environment the command ran in, which the first lines print.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from importlib.resources import files

import numpy as np

from providers.builtin import MINILM, BuiltinEmbedding
from providers.minilm import MODEL_PACKAGE, get_model

_WORDS = (
    "the a an of to in on for with from by at about into over after before between under "
    "model data system user tenant worker queue job task result error token vector search query "
    "document passage report invoice customer order payment account server network request response "
    "price market energy policy river mountain city village garden kitchen teacher student doctor patient "
    "quickly slowly carefully rarely often never always really almost nearly "
    "runs reads writes builds ships checks sends finds keeps moves grows opens closes fixes measures "
    "green large small ancient modern quiet noisy bright heavy simple complex useful fragile remote local"
).split()
_ENDINGS = (".", ".", ".", "?", "!", ";")


def make_texts(count: int, seed: int = 20240601) -> list[str]:
    """``count`` varied, reproducible English-like texts of 5 to 60 words, some with numbers."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 60))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), f"{rng.randint(1, 99999):,}")
        if rng.random() < 0.3:
            cut = rng.randrange(1, len(words))
            words[cut - 1] += ","
        texts.append(" ".join(words).capitalize() + rng.choice(_ENDINGS))
    return texts


def blas_description() -> str:
    """numpy's BLAS library, kernel and threads, as threadpoolctl (if installed) reports them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl to see the kernel)"
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    return "; ".join(
        f"{i['internal_api']} {i['version']}, {i.get('architecture')}, {i['num_threads']} threads" for i in blas
    )


def time_once(run: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = run()
    return time.perf_counter() - start, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = make_texts(args.texts)
    blas_env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    print(f"{len(texts)} texts, {os.cpu_count()} cores, numpy {np.__version__}, OpenBLAS env: {blas_env or 'unset'}")
    print(f"numpy's BLAS: {blas_description()}")

    model = get_model()
    provider = BuiltinEmbedding(MINILM)
    runs: dict[str, Callable[[], np.ndarray]] = {
        "numpy MiniLM (ours), one call": lambda: model.encode(texts)[0],
        f"Builtin provider, batches of {provider.batch_size}": lambda: provider.encode(texts).vectors,
    }
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        reference_name = ""
        print("sentence-transformers on torch: not installed; for the comparison run pip install -e '.[bench-torch]'")
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        reference = SentenceTransformer(str(files(MODEL_PACKAGE) / "model"), device="cpu")
        reference_name = f"sentence-transformers on torch {torch.__version__} ({torch.get_num_threads()} threads)"
        runs[reference_name] = lambda: reference.encode(texts, convert_to_numpy=True)

    # Warm up, then alternate the sides so that both see the same machine; the fastest run counts.
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds, vectors[name] = time_once(run)
            best[name] = min(best[name], seconds)
    width = max(map(len, runs))
    for name, seconds in best.items():
        print(f"{name:<{width}}  {len(texts) / seconds:8.1f} texts/s")
    if reference_name:
        ours = next(iter(runs))
        cosines = np.sum(vectors[ours] * vectors[reference_name], axis=1)
        print(f"ratio ours / torch: {best[reference_name] / best[ours]:.2f}")
        print(f"cosine ours vs torch: min {cosines.min():.7f}, mean {cosines.mean():.7f}")


if __name__ == "__main__":
    main()
