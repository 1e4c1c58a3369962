"""Input files read without any service: what a malformed line is refused with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conf.errors import InvalidRequest
from workers.inputs import read_inputs


def test_a_number_longer_than_python_converts_is_refused_as_invalid_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime_from_env: Callable[[], object]
) -> None:
    """json.loads raises a plain ValueError (no ``msg``) for an integer past 4,300 digits."""
    monkeypatch.setenv("MODELYARD_DATA_DIR", str(tmp_path / "data"))
    runtime_from_env()  # the input limits are settings, as in the CLI
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "x", "n": ' + "1" * 5000 + "}\n")
    with pytest.raises(InvalidRequest, match=r"^long\.jsonl:2: not valid JSON \(Exceeds the limit"):
        list(read_inputs([str(path)]))
