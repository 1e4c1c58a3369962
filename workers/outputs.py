"""Writing a job's results to a file, streamed a page of items at a time (a million vectors
are never held in memory):

- ``.jsonl``: one line per item, as ``job results`` prints them;
- ``.npy``: the vectors as one ``(items, dim)`` float32 array in item order (a row of NaN
  where an item has no vector), and beside it ``NAME.ids.txt``: the custom ids, one a line,
  in the same order;
- ``.parquet`` (the ``parquet`` extra): ``custom_id``, ``status``, ``vector`` (float32 list),
  ``error_code``, ``error_message``, in row groups of about 16 MB of vectors.

For a retry (``job retry``), the results are the whole lineage: the original's items, each
with its newest outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from conf.errors import InvalidRequest
from tasks import producer

FORMATS = (".jsonl", ".ndjson", ".npy", ".parquet")
PARQUET_ROWS = 10_000


def ids_path(npy: Path) -> Path:
    return npy.with_name(npy.name.removesuffix(npy.suffix) + ".ids.txt")


def check_target(path: str) -> str:
    """The output's format (its suffix), or one line saying why it cannot be written."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidRequest(f"{path}: expected a .jsonl, .npy or .parquet file name")
    if suffix == ".parquet":
        parquet_module()
    return suffix


def write_results(job_id: str, path: str, row: Any) -> str:
    """Write the results of ``job_id`` to ``path`` (format from its suffix); returns a summary line.
    ``row``: the JSON line of one item (workers.commands.result_row)."""
    target = Path(path)
    suffix = check_target(path)  # before anything is written
    if suffix == ".parquet":
        pq = parquet_module()
    n, dim = producer.results_shape(job_id)
    items = producer.iter_results(job_id, lineage=True)
    if suffix == ".npy":
        with target.open("wb") as fh, ids_path(target).open("w", encoding="utf-8") as ids:
            counts = _write_npy(items, fh, ids, n, dim)
        return (
            f"wrote {n:,} x {dim} vectors to {path} and their custom ids to {ids_path(target)}; "
            f"{counts['failed']:,} items have no vector"
        )
    if suffix == ".parquet":
        counts = _write_parquet(pq, items, target, dim)
    else:
        counts = {"rows": 0, "failed": 0}
        with target.open("w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(row(item), default=str) + "\n")
                counts["rows"] += 1
                counts["failed"] += item.status != "succeeded"
    return f"wrote {counts['rows']:,} results to {path}; {counts['failed']:,} items did not succeed"


def _write_npy(items: Iterator[producer.ItemResult], fh: IO[bytes], ids: IO[str], n: int, dim: int) -> dict[str, int]:
    np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
    missing = np.full(dim, np.nan, dtype="<f4").tobytes()
    failed = 0
    for item in items:
        if item.vector is not None and item.vector.shape[0] == dim:
            fh.write(item.vector.astype("<f4", copy=False).tobytes())
        else:
            fh.write(missing)
            failed += 1
        ids.write(item.custom_id + "\n")
    return {"failed": failed}


def parquet_module() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidRequest("Parquet needs the parquet extra: pip install 'modelyard[parquet]' (pyarrow)") from None
    return pq


def _write_parquet(pq: Any, items: Iterator[producer.ItemResult], target: Path, dim: int) -> dict[str, int]:
    """Row groups of about 16 MB of vectors (2,730 rows at 1,536 dimensions), each built from
    one float32 block: the writer holds one group, whatever the job's size."""
    import pyarrow as pa

    vector_type = pa.list_(pa.float32())  # Parquet cannot store a null fixed-size list of non-zero length
    schema = pa.schema(
        [
            ("custom_id", pa.string()),
            ("status", pa.string()),
            ("vector", vector_type),
            ("error_code", pa.string()),
            ("error_message", pa.string()),
        ]
    )
    group = max(1, min(PARQUET_ROWS, (16 * 1024 * 1024) // max(4 * dim, 1)))
    counts = {"rows": 0, "failed": 0}
    # Vectors are not dictionary-encoded: floats seldom repeat, and the attempt buffers a dictionary.
    with pq.ParquetWriter(target, schema, use_dictionary=["status", "error_code", "error_message"]) as writer:
        for page in producer.pages(items, group):
            block = np.zeros((len(page), dim), dtype=np.float32)
            has_vector = np.zeros(len(page), dtype=bool)
            for n, item in enumerate(page):
                if item.vector is not None and item.vector.shape[0] == dim:
                    block[n] = item.vector
                    has_vector[n] = True
            offsets = np.concatenate(([0], np.cumsum(has_vector * dim))).astype(np.int32)
            vectors = pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()),
                pa.array(block[has_vector].ravel(), pa.float32()),
                mask=pa.array(~has_vector),
            )
            writer.write_table(
                pa.Table.from_arrays(
                    [
                        pa.array([i.custom_id for i in page], pa.string()),
                        pa.array([i.status for i in page], pa.string()),
                        vectors,
                        pa.array([i.error_code for i in page], pa.string()),
                        pa.array([i.error_message for i in page], pa.string()),
                    ],
                    schema=schema,
                )
            )
            counts["rows"] += len(page)
            counts["failed"] += sum(i.status != "succeeded" for i in page)
    return counts
