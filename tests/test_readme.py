"""The README's and docs' Python examples run as written, and the README's test command is what CI runs.

Every fenced block opened with exactly ```python runs, from a fresh temporary folder. A block that takes
more than a few seconds (it trains or measures the machine) is fenced ```python no-run instead: it is
shown to users but not run here, and the docs say so next to it.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)  # not ```python no-run


@pytest.fixture(autouse=True)
def _registries_restored():
    """The examples register a space, shape and cost rules and a device, as users do; the rest of the suite must
    not see them (a test lists the registered spaces), so every registry is restored after each test here."""
    from hwnas.graph import registry as shapes
    from hwnas.hw import device
    from hwnas.profile import rules
    from hwnas.spaces import registry as spaces

    tables = [spaces._SPACES, spaces._INPUTS, shapes._MODULE_RULES, shapes._FUNCTION_RULES, shapes._METHOD_RULES,
              shapes._NAMED_RULES, shapes._LEAVES, rules._FLOPS, rules._PARAMS, rules._BUILTIN, device._REGISTRY]
    saved = [t.copy() for t in tables]
    yield
    for table, copy in zip(tables, saved):
        table.clear()
        table.update(copy)


def _run_blocks(text: str, name: str) -> int:
    blocks = _BLOCK.findall(text)
    for i, code in enumerate(blocks):
        exec(compile(code, f"{name} python block {i + 1}", "exec"), {"__name__": f"doc_{i}"})
    return len(blocks)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README names shipped LUTs, so its examples run from any folder
    assert _run_blocks(README, "README.md") >= 3


def test_readme_stays_short():
    assert len(README.splitlines()) <= 300, "the README is for users; move details to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_python_blocks_run(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = doc.read_text()
    ran = _run_blocks(text, f"docs/{doc.name}")
    skipped = text.count("```python no-run")
    assert ran + skipped == text.count("```python"), f"docs/{doc.name}: a python fence neither runs nor is no-run"


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    test_command = commands[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()
