"""Atomic writes keep a file whole and give it ordinary permissions."""

from __future__ import annotations

import json
import os

from hwnas.io import atomic_write_json, atomic_write_text, read_json


def test_atomic_write_permissions_and_content(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = atomic_write_json(tmp_path / "sub" / "a.json", {"x": 1})
    assert read_json(path) == {"x": 1}
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    os.chmod(path, 0o640)
    atomic_write_text(path, json.dumps({"x": 2}))
    assert path.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode
    assert read_json(path) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary left behind
