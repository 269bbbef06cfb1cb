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


def test_cli_profile_of_a_user_space(tmp_path, capsys):
    path = tmp_path / "myspace.py"
    path.write_text(
        "import hwnas.nn as hnn\n\n\n"
        "class MySpace(hnn.Space):\n"
        "    def __init__(self, classes=10):\n"
        "        super().__init__()\n"
        "        w = hnn.Choice([8, 16], label='w')\n"
        "        self.stem = hnn.ConvBNAct(3, w, hnn.Choice([3, 5], label='k'), stride=2)\n"
        "        self.head = hnn.Linear(w, classes)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.stem(x).mean((2, 3)))\n")
    assert main(["profile", "--space", f"{path}:MySpace", "--input", "1,3,32,32", "--space-arg", "classes=5",
                 "--constraint", "params=300"]) == 0
    out = capsys.readouterr().out
    # the smallest subnet: 3x3 conv 3->8 (216) + BN (16) + Linear 8->5 (45) = 277 params
    assert out.splitlines()[2].split()[:2] == ["params", "277"] and "2 labels, 4 subnets" in out
    assert main(["profile", "--space", f"{path}:Nope"]) == 2
    assert "has no class or function 'Nope'" in capsys.readouterr().err
    assert main(["profile", "--space", f"{path}:MySpace", "--space-arg", "width=3"]) == 2
    assert "unknown keyword argument(s) ['width']; it accepts ['classes']" in capsys.readouterr().err


def test_cli_errors(capsys):
    assert main(["profile", "--space", "nope"]) == 2
    assert "no space named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--space", "digits", "--input", "1,x"])


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "hwnas.cli", "spaces"], capture_output=True, text=True, check=True)
    assert "mobilenet_v3" in out.stdout
