"""The README's promises that can drift from the code: its factory x model type table is the
one ``modelyard factories --markdown`` prints from the registered provider classes."""

from __future__ import annotations

from models.admin import list_factories
from tests.conftest import ROOT
from workers.llm_commands import factory_markdown


def test_readme_factory_table_matches_the_registry() -> None:
    table = factory_markdown(list_factories())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table in readme, "README's factory table is stale: paste `modelyard factories --markdown` into it"


def test_the_table_marks_supported_unsupported_and_absent_types() -> None:
    rows = {line.split(" | ")[0].lstrip("| "): line for line in factory_markdown(list_factories()).splitlines()[2:]}
    assert rows["OpenAI"].startswith("| OpenAI | ✅ | ✅ | · | ✅ | ✅ | ✅ |")
    assert "ocr ❌" in rows["MinerU"]
    assert len(rows) >= 70
