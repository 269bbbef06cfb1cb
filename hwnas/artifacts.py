"""The latency artefacts that ship inside the package, addressed by name.

LUTs live in ``hwnas/data/lut/<space>_<device>.json`` and learned predictors in
``hwnas/data/predictors/<device>.skops`` (with their training data, ``<device>.skops.data.json``), read with
:mod:`importlib.resources`, so they work from a wheel as from the checkout. A LUT is named by its space
(``"mobilenet_v3"``, device ``cpu-ort-1t`` by default) or by space and device (``"mobilenet_v3_cpu-ort-2t"``);
a predictor by its device (``"cpu-ort-1t"``). Everywhere a LUT or predictor is taken, a file path works too.

Shipped artefacts are read-only: building, refitting or adapting one writes a file of the user's.

Example:
    >>> from hwnas.artifacts import lut_path, list_artifacts
    >>> lut_path("mobilenet_v3").name
    'mobilenet_v3_cpu-ort-1t.json'
    >>> sorted({a.kind for a in list_artifacts()})
    ['lut', 'predictor']
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Artifact", "ArtifactNotFoundError", "DEFAULT_DEVICE", "list_artifacts", "lut_path", "predictor_path",
           "resolve_lut", "resolve_predictor", "find_artifact", "shipped_name", "adapt_command"]

#: The device a LUT name without one refers to.
DEFAULT_DEVICE = "cpu-ort-1t"

_SUFFIX = {"lut": ".json", "predictor": ".skops"}
_FOLDER = {"lut": "lut", "predictor": "predictors"}
_files = contextlib.ExitStack()  # holds extracted copies if the package is imported from a zip
atexit.register(_files.close)


class ArtifactNotFoundError(FileNotFoundError):
    """No shipped artefact has the name asked for (the message lists those that do)."""


@dataclass(frozen=True)
class Artifact:
    """One shipped artefact.

    Attributes:
        kind: ``"lut"`` or ``"predictor"``.
        name: the name it is addressed by, e.g. ``"mobilenet_v3_cpu-ort-1t"`` or ``"cpu-ort-1t"``.
        device: the device it was built for.
        space: the space of a LUT (``None`` for a predictor).
        path: the file (inside the installed package).
    """

    kind: str
    name: str
    device: str
    space: str | None
    path: Path


def _folder(kind: str) -> Path:
    ref = importlib.resources.files("hwnas") / "data" / _FOLDER[kind]
    if isinstance(ref, Path):
        return ref
    return _files.enter_context(importlib.resources.as_file(ref))  # pragma: no cover - zipped installs


def list_artifacts(kind: str | None = None) -> list[Artifact]:
    """Every shipped LUT and predictor (or those of one ``kind``), sorted by kind and name."""
    if kind is not None and kind not in _SUFFIX:
        raise ValueError(f"list_artifacts(kind={kind!r}): expected 'lut', 'predictor' or None.")
    out = []
    for k in ([kind] if kind else sorted(_SUFFIX)):
        folder = _folder(k)
        files = sorted(folder.glob(f"*{_SUFFIX[k]}")) if folder.is_dir() else []
        for f in files:
            name = f.name[:-len(_SUFFIX[k])]
            if k == "lut":
                space, _, device = name.rpartition("_")
                out.append(Artifact(k, name, device, space, f))
            else:
                out.append(Artifact(k, name, name, None, f))
    return out


def _names(kind: str) -> str:
    return ", ".join(a.name for a in list_artifacts(kind)) or "none"


def lut_path(space: str, device: str | None = None) -> Path:
    """The shipped LUT of ``space`` on ``device`` (default :data:`DEFAULT_DEVICE`).

    ``space`` may also be a full name with the device, ``"mobilenet_v3_cpu-ort-2t"``.

    Raises:
        ArtifactNotFoundError: no such LUT ships; the message lists those that do and the build command.
    """
    luts = {a.name: a for a in list_artifacts("lut")}
    if space in luts:
        art = luts[space]
        if device is not None and device != art.device:
            raise ValueError(f"LUT name {space!r} names device {art.device!r}, but device {device!r} was asked for; "
                             f"give the space alone ({art.space!r}) with the device, or the full name alone.")
        return art.path
    dev = device or DEFAULT_DEVICE
    name = f"{space}_{dev}"
    if name in luts:
        return luts[name].path
    raise ArtifactNotFoundError(
        f"no shipped LUT named {name!r} (asked for {space!r}" + (f" on {device!r}" if device else "")
        + f"). Shipped LUTs: {_names('lut')}. Pass the path of a LUT file instead, or build one: "
        f"hwnas lut build --space {space} --device {dev} --out {name}.json")


def predictor_path(device: str = DEFAULT_DEVICE) -> Path:
    """The shipped predictor of ``device`` (its training data sit next to it, ``<file>.data.json``).

    Raises:
        ArtifactNotFoundError: no predictor ships for ``device``; the message lists those that do and the
            training command.
    """
    preds = {a.name: a for a in list_artifacts("predictor")}
    if device in preds:
        return preds[device].path
    raise ArtifactNotFoundError(
        f"no shipped latency predictor for device {device!r}. Shipped predictors: {_names('predictor')}. Pass the "
        f"path of a predictor file instead, or train one: python benchmarks/train_predictor.py --device {device} "
        f"--out {device}.skops")


def _is_path(spec: str | os.PathLike, suffix: str) -> bool:
    text = os.fspath(spec)
    return (isinstance(spec, os.PathLike) or os.sep in text or "/" in text or text.endswith(suffix)
            or Path(text).is_file())


def resolve_lut(spec: str | os.PathLike, device: str | None = None) -> Path:
    """A LUT file from a name (:func:`lut_path`) or a path (returned as given: a path ends in ``.json``, holds a
    folder separator or names an existing file; the loader reports a missing one)."""
    if _is_path(spec, ".json"):
        return Path(spec)
    return lut_path(str(spec), device)


def resolve_predictor(spec: str | os.PathLike) -> Path:
    """A predictor file from a device name (:func:`predictor_path`) or a path (returned as given, like
    :func:`resolve_lut`)."""
    if _is_path(spec, ".skops"):
        return Path(spec)
    return predictor_path(str(spec))


def find_artifact(name: str) -> Artifact:
    """The shipped artefact of a given name, LUT or predictor (``"digits"`` is ``"digits_cpu-ort-1t"``).

    Raises:
        ArtifactNotFoundError: no artefact has that name; the message lists all of them.
    """
    arts = list_artifacts()
    for art in arts:
        if name == art.name or (art.kind == "lut" and name == art.space and art.device == DEFAULT_DEVICE):
            return art
    raise ArtifactNotFoundError(f"no shipped LUT or predictor named {name!r}. Shipped: LUTs {_names('lut')}; "
                                f"predictors {_names('predictor')}. Give a file path instead.")


def shipped_name(path: str | os.PathLike) -> str | None:
    """The name of a shipped artefact at ``path``, or ``None`` when the file is not one."""
    try:
        target = Path(path).resolve()
    except OSError:  # pragma: no cover
        return None
    for art in list_artifacts():
        if art.path.resolve() == target:
            return art.name
    return None


def adapt_command(path: str | os.PathLike) -> str:
    """The command that adapts an artefact to this machine (``hwnas adapt``), named as a user would give it."""
    name = shipped_name(path)
    p = Path(path)
    out = f"{name or p.stem}.adapted{p.suffix}"
    return f"hwnas adapt {name or str(p)} --measurements 40 --out {out}"
