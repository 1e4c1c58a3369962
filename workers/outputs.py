"""Writing a job's results to a file, streamed a page of items at a time (a million vectors
are never held in memory):

- ``.jsonl``: one line per item, as ``job results`` prints them;
- ``.npy``: the vectors as one ``(items, dim)`` float32 array in item order (a row of NaN
  where an item has no vector), and beside it ``NAME.ids.txt``: the custom ids, one a line,
  in the same order;
- ``.parquet`` (the ``parquet`` extra): ``custom_id``, ``status``, ``vector`` (float32 list),
  ``error_code``, ``error_message``, in row groups of 10,000.

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


def write_results(job_id: str, path: str, row: Any) -> str:
    """Write the results of ``job_id`` to ``path`` (format from its suffix); returns a summary line.
    ``row``: the JSON line of one item (workers.commands.result_row)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidRequest(f"{path}: expected a .jsonl, .npy or .parquet file name")
    if suffix == ".parquet":
        pq = parquet_module()  # before anything is written
    n, dim = producer.results_shape(job_id)
    items = producer.iter_results(job_id, lineage=True)
    if suffix == ".npy":
        with target.open("wb") as fh, ids_path(target).open("w", encoding="utf-8") as ids:
            counts = _write_npy(items, fh, ids, n, dim)
        return (f"wrote {n:,} x {dim} vectors to {path} and their custom ids to {ids_path(target)}; "
                f"{counts['failed']:,} items have no vector")
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
    import pyarrow as pa

    schema = pa.schema([("custom_id", pa.string()), ("status", pa.string()),
                        ("vector", pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())),
                        ("error_code", pa.string()), ("error_message", pa.string())])
    counts = {"rows": 0, "failed": 0}
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}

    def flush(writer: Any) -> None:
        writer.write_table(pa.table(cols, schema=schema))
        for values in cols.values():
            values.clear()

    with pq.ParquetWriter(target, schema) as writer:
        for item in items:
            cols["custom_id"].append(item.custom_id)
            cols["status"].append(item.status)
            cols["vector"].append(item.vector if item.vector is not None and item.vector.shape[0] == dim else None)
            cols["error_code"].append(item.error_code)
            cols["error_message"].append(item.error_message)
            counts["rows"] += 1
            counts["failed"] += item.status != "succeeded"
            if len(cols["custom_id"]) >= PARQUET_ROWS:
                flush(writer)
        if cols["custom_id"] or not counts["rows"]:
            flush(writer)
    return counts
