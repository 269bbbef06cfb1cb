"""The command line and the one-way import flow."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

from hwnas.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1] / "hwnas"

# space -> graph -> profile -> hw/predict -> search -> export/report -> cli (lower may not import higher)
LAYERS = {"space": 0, "spaces": 0, "io": 0, "zoo": 0, "nn": 0, "graph": 1, "profile": 2, "hw": 3, "predict": 3,
          "search": 4, "export": 5, "report": 5, "convert": 5, "cli": 6, "demo": 6, "__init__": 7}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "hwnas" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def test_imports_flow_one_way():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        me = _layer(".".join(rel.parts))
        if me is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                other = _layer(name)
                if other is not None and other > me:
                    bad.append(f"{rel} imports {name}")
    assert not bad, "imports against the flow space -> graph -> profile -> hw -> search -> export -> cli:\n" + \
        "\n".join(bad)


def test_cli_profile(capsys):
    assert main(["profile", "--space", "digits", "--constraint", "flops=60%", "--constraint", "params=1"]) == 0
    out = capsys.readouterr().out
    assert "flops" in out and "yes" in out and "NO" in out and "subnets" in out


def test_cli_errors(capsys):
    assert main(["profile", "--space", "nope"]) == 2
    assert "no space named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--space", "digits", "--input", "1,x"])


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "hwnas.cli", "spaces"], capture_output=True, text=True, check=True)
    assert "mobilenet_v3" in out.stdout
