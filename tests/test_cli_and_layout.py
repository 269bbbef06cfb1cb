"""The command line and the one-way import flow."""

from __future__ import annotations

import ast
import hashlib
import json
import pathlib
import shutil
import warnings

import pytest

import hwnas
import hwnas.hw.lut as lut_module
from hwnas.artifacts import (
    ArtifactNotFoundError,
    adapt_command,
    find_artifact,
    list_artifacts,
    lut_path,
    predictor_path,
    resolve_lut,
    resolve_predictor,
)
from hwnas.cli import main
from hwnas.hw.lut import LUT, FingerprintWarning

ROOT = pathlib.Path(hwnas.__file__).resolve().parent  # the package under test: this tree, or an installed wheel

# space -> graph -> profile -> hw/predict -> search -> export/report -> cli (lower may not import higher)
LAYERS = {"space": 0, "spaces": 0, "io": 0, "artifacts": 0, "zoo": 0, "nn": 0, "graph": 1, "profile": 2, "hw": 3, "predict": 3,
          "search": 4, "export": 5, "report": 5, "convert": 5, "cli": 6, "demo": 6, "api": 6, "__init__": 7}


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
    row = next(line for line in out.splitlines() if " params " in line)
    assert [c.strip() for c in row.strip("│| ").replace("|", "│").split("│")][:2] == ["params", "277"]
    assert "2 labels, 4 subnets" in out
    assert main(["profile", "--space", f"{path}:Nope"]) == 2
    assert "has no class or function 'Nope'" in capsys.readouterr().err
    assert main(["profile", "--space", f"{path}:MySpace", "--space-arg", "width=3"]) == 2
    assert "unknown keyword argument(s) ['width']; it accepts ['classes']" in capsys.readouterr().err


def test_cli_errors(capsys):
    assert main(["profile", "--space", "nope"]) == 2
    assert "no space named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--space", "digits", "--input", "1,x"])


def test_console_script_runs(tmp_path):
    """The installed ``hwnas`` entry point (conftest.hwnas_command: it runs this tree, else python -m hwnas.cli)
    from a folder outside the checkout."""
    from conftest import hwnas_command, run_hwnas

    out = run_hwnas("spaces", cwd=tmp_path)
    assert out.returncode == 0 and {"digits", "mobilenet_v3"} <= set(out.stdout.split()), out.stderr
    if shutil.which("hwnas") and hwnas_command()[0] != shutil.which("hwnas"):
        warnings.warn(f"the hwnas on PATH ({shutil.which('hwnas')}) does not run this tree: tested with "
                      f"{' '.join(hwnas_command())}", UserWarning, stacklevel=1)


# ------------------------------------------------------------------------------ shipped artefacts, by name
DATA = ROOT / "data"


def test_shipped_artifacts_are_found_by_name():
    files = sorted((DATA / "lut").glob("*.json")) + sorted((DATA / "predictors").glob("*.skops"))
    assert len(files) >= 6 and sorted(a.path for a in list_artifacts()) == sorted(files)
    assert lut_path("mobilenet_v3") == lut_path("mobilenet_v3_cpu-ort-1t") == lut_path("mobilenet_v3", "cpu-ort-1t") \
        == DATA / "lut" / "mobilenet_v3_cpu-ort-1t.json"
    assert lut_path("mobilenet_v3", "cpu-ort-2t") == DATA / "lut" / "mobilenet_v3_cpu-ort-2t.json"
    assert predictor_path("cpu-ort-1t") == DATA / "predictors" / "cpu-ort-1t.skops"
    assert (DATA / "predictors" / "cpu-ort-1t.skops.data.json").is_file()  # the training data ship with it
    assert find_artifact("digits").path == lut_path("digits") and find_artifact("cpu-ort-1t").kind == "predictor"
    # a path is taken as given, a name is looked up
    assert resolve_lut("some/dir/my.json") == pathlib.Path("some/dir/my.json")
    assert resolve_lut("digits", "cpu-ort-2t") == DATA / "lut" / "digits_cpu-ort-2t.json"
    assert resolve_predictor("cpu-ort-1t") == predictor_path("cpu-ort-1t")
    # loaded by name: the file's own content says which device and space it is
    two = json.loads(lut_path("mobilenet_v3", "cpu-ort-2t").read_text())
    lut = LUT.load("mobilenet_v3", device="cpu-ort-2t", check_fingerprint=False)
    assert lut.device.name == two["device"]["name"] == "cpu-ort-2t" and lut.spaces == two["spaces"]
    assert sorted(LUT.load("digits", check_fingerprint=False).entries) == sorted(
        json.loads((DATA / "lut" / "digits_cpu-ort-1t.json").read_text())["entries"])


def test_unknown_artifact_names_list_the_shipped_ones_and_how_to_build():
    with pytest.raises(ArtifactNotFoundError) as info:
        lut_path("resnet", "cpu-ort-2t")
    text = str(info.value)
    assert "'resnet_cpu-ort-2t'" in text and "mobilenet_v3_cpu-ort-1t" in text and "digits_cpu-ort-2t" in text
    assert "hwnas lut build --space resnet --device cpu-ort-2t --out resnet_cpu-ort-2t.json" in text
    with pytest.raises(ValueError, match="names device 'cpu-ort-2t', but device 'cpu-ort-1t'"):
        lut_path("digits_cpu-ort-2t", "cpu-ort-1t")
    with pytest.raises(ArtifactNotFoundError, match=r"cpu-ort-9t.*Shipped predictors: cpu-ort-1t.*train_predictor"):
        predictor_path("cpu-ort-9t")
    with pytest.raises(ArtifactNotFoundError, match="no shipped LUT named 'nope_cpu-ort-1t'"):
        hwnas_latency("nope")


def hwnas_latency(lut):
    import torch

    import hwnas

    return hwnas.LatencyProfiler(hwnas.spaces.create("digits"), torch.zeros(1, 1, 8, 8), lut=lut)


def test_cli_takes_lut_names_and_never_writes_a_shipped_one(tmp_path, capsys):
    assert main(["lut", "info", "mobilenet_v3", "--device", "cpu-ort-2t"]) == 0
    assert capsys.readouterr().out.startswith("LUT for cpu-ort-2t:")
    assert main(["lut", "info", str(lut_path("digits"))]) == 0  # a path still works
    assert capsys.readouterr().out.startswith("LUT for cpu-ort-1t:")
    assert main(["lut", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(a.name in listed for a in list_artifacts())
    assert main(["lut", "info", "resnet"]) == 2
    err = capsys.readouterr().err
    assert "no shipped LUT named 'resnet_cpu-ort-1t'" in err and "hwnas lut build --space resnet" in err
    before = hashlib.sha256(lut_path("digits").read_bytes()).hexdigest()
    assert main(["lut", "refit", "digits"]) == 2
    assert "shipped LUT 'digits_cpu-ort-1t'" in capsys.readouterr().err
    assert main(["lut", "refit", str(lut_path("digits"))]) == 2  # its path too: only --out writes it
    assert "--out FILE" in capsys.readouterr().err
    assert main(["lut", "speed-check", "--space", "digits", "--lut", "digits", "--write"]) == 2  # before measuring
    assert "--out FILE" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"write over the shipped LUT 'digits_cpu-ort-1t'.*lut\.save\('my_lut"):
        LUT.load("digits", check_fingerprint=False).save()  # the API neither, unless given the path
    assert hashlib.sha256(lut_path("digits").read_bytes()).hexdigest() == before
    # profile --lut NAME adds the latency row: the LUT's own range of the space
    from hwnas.profile.constraints import metric_range

    assert main(["profile", "--space", "digits", "--lut", "digits", "--constraint", "latency_ms=50%"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " latency_ms " in line)
    row = [cell.strip() for cell in row.strip("│| ").replace("|", "│").split("│")]
    lo, _, hi = metric_range(hwnas_latency(str(lut_path("digits"))))
    assert float(row[1]) == pytest.approx(lo, rel=1e-3) and float(row[3]) == pytest.approx(hi, rel=1e-3)
    assert main(["profile", "--space", "digits", "--lut", "nope"]) == 2
    assert "Shipped LUTs: digits_cpu-ort-1t" in capsys.readouterr().err


def test_fingerprint_warning_names_the_adapt_command_and_the_cli_shows_it_once(tmp_path, capsys, monkeypatch):
    data = json.loads(lut_path("digits").read_text())
    data["fingerprint"]["cpu_model"] = "Another CPU"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    cmd = f"hwnas adapt {other} --measurements 40 --out other.adapted.json"
    assert adapt_command(other) == cmd
    with pytest.warns(FingerprintWarning) as caught:
        LUT.load(other)
    assert "CPU model: 'Another CPU'" in str(caught[0].message) and cmd in str(caught[0].message)
    for _ in range(3):  # the CLI: once per process
        assert main(["lut", "info", str(other)]) == 0
    err = capsys.readouterr().err
    assert err.count(cmd) == 1 and err.startswith("hwnas: warning: LUT")
    # a shipped LUT is named by its name (here the host's fingerprint is the one that differs)
    host = lut_module.fingerprint("cpu-ort-1t")
    monkeypatch.setattr(lut_module, "fingerprint", lambda dev: dict(host, cpu_model="Another CPU"))
    with pytest.warns(FingerprintWarning, match=r"LUT 'digits_cpu-ort-1t' .*hwnas adapt digits_cpu-ort-1t "
                                                r"--measurements 40 --out digits_cpu-ort-1t\.adapted\.json"):
        LUT.load("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintWarning)
        monkeypatch.undo()
        LUT.load(other, check_fingerprint=False)  # asked not to check: silent
