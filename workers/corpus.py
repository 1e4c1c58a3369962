"""The demo's corpus: modelyard's own documentation, chunked into passages.

Sources, all shipped with the repository: the Markdown docs (README.md, docs/*.md), the
docstrings of every module, class and function in the five packages, and one passage per
catalog factory naming its models. Passages are cut on sentence boundaries.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from conf.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("conf", "providers", "models", "tasks", "workers")
_SENTENCE = re.compile(r"(?<=[.!?:])\s+(?=[A-Z`(\"'])")
MAX_CHARS = 360


def passages() -> Iterator[tuple[str, str]]:
    """(source, passage) pairs, in a stable order."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.is_file():
            for n, text in enumerate(_split(_markdown_paragraphs(path.read_text(encoding="utf-8")))):
                yield f"{path.relative_to(ROOT)}#{n}", text
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for name, doc in _docstrings(path):
                for n, text in enumerate(_split([doc])):
                    yield f"{path.relative_to(ROOT)}:{name}#{n}", text
    for f in load_catalog():
        if f.models:
            names = ", ".join(m.name for m in f.models[:12])
            types = ", ".join(sorted({t for m in f.models for t in m.model_types}))
            yield f"catalog:{f.name}", f"The {f.name} factory offers {len(f.models)} models ({types}), such as {names}."


def _markdown_paragraphs(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [p.lstrip("#-* ") for p in paras if len(p) > 40 and not p.startswith("|")]


def _docstrings(path: Path) -> Iterator[tuple[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)))]
    for node in nodes:
        if getattr(node, "name", "").startswith("_"):  # internals make poor answers
            continue
        doc = ast.get_docstring(node)
        if doc and len(doc) > 40:
            yield getattr(node, "name", "module"), " ".join(doc.split())


def _split(paragraphs: list[str]) -> Iterator[str]:
    for para in paragraphs:
        current = ""
        for sentence in _SENTENCE.split(para):
            if current and len(current) + len(sentence) + 1 > MAX_CHARS:
                yield current
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            yield current
