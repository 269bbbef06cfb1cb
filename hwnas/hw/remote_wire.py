"""The wire format between hwnas and a measurement agent (``hwnas device serve``): JSON and raw bytes, no pickle.

A job is one HTTP body::

    b"HWNAS1" | 4-byte big-endian length of the header | header (UTF-8 JSON) | blob | blob | ...

The header lists its blobs in order (``"blobs": [{"sha256": ..., "size": ..., "kind": "onnx" | "npy"}]``). A blob is an
ONNX model (checked to be an ONNX ``ModelProto`` before anything else reads it) or a NumPy array in ``.npy`` format,
read with ``allow_pickle=False``. The agent keeps blobs by their SHA-256, so a job may name a blob without sending
it again; the agent answers 409 with the missing ones, and the client sends them. Arrays in JSON answers are
``{"__ndarray__": [dtype, shape, base64 of the little-endian bytes]}``.

This module needs only the standard library and NumPy (the agent's light install, ``docs/devices.md``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
from typing import Any

import numpy as np

__all__ = ["MAGIC", "PROTOCOL", "WireError", "sha256", "pack_job", "unpack_job", "looks_like_onnx", "array_to_npy",
           "npy_to_array", "to_json", "from_json"]

MAGIC = b"HWNAS1"
#: Version of the job protocol; the agent refuses another.
PROTOCOL = 1
_KINDS = ("onnx", "npy")


class WireError(ValueError):
    """A body, blob or field does not follow the protocol (the agent answers 400 with the message)."""


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (the name of a blob)."""
    return hashlib.sha256(data).hexdigest()


def pack_job(header: dict[str, Any], blobs: list[tuple[str, bytes]]) -> bytes:
    """The body of a job: ``header`` (JSON-able) and ``blobs`` as ``(kind, bytes)``, listed in the header."""
    header = dict(header)
    header["blobs"] = [{"sha256": sha256(b), "size": len(b), "kind": k} for k, b in blobs]
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return b"".join([MAGIC, struct.pack(">I", len(head)), head, *(b for _, b in blobs)])


def unpack_job(body: bytes, max_model_bytes: int) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """Split and check a job body: ``(header, {sha256: (kind, bytes)})``.

    Raises:
        WireError: bad framing, a blob whose hash or size differs from the header, an ONNX blob over
            ``max_model_bytes`` or not an ONNX model, an array that is not a plain ``.npy``.
    """
    if not body.startswith(MAGIC) or len(body) < len(MAGIC) + 4:
        raise WireError(f"not an hwnas job (expected the body to start with {MAGIC!r}); use hwnas's remote client.")
    (n,) = struct.unpack(">I", body[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if start + n > len(body):
        raise WireError(f"job header of {n} bytes is longer than the body ({len(body)} bytes).")
    try:
        header = json.loads(body[start:start + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WireError(f"job header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("blobs", []), list):
        raise WireError("job header must be a JSON object with a \"blobs\" list.")
    if header.get("protocol") != PROTOCOL:
        raise WireError(f"protocol {header.get('protocol')!r} is not this agent's ({PROTOCOL}); use the same hwnas "
                        "version on both machines.")
    pos = start + n
    blobs: dict[str, tuple[str, bytes]] = {}
    for i, meta in enumerate(header.get("blobs", [])):
        if not isinstance(meta, dict) or meta.get("kind") not in _KINDS or not isinstance(meta.get("size"), int) \
                or meta["size"] < 0 or not isinstance(meta.get("sha256"), str):
            raise WireError(f"blob {i}: expected {{\"sha256\", \"size\", \"kind\" in {_KINDS}}}, got {meta!r}.")
        data = body[pos:pos + meta["size"]]
        pos += meta["size"]
        if len(data) != meta["size"] or sha256(data) != meta["sha256"]:
            raise WireError(f"blob {i} ({meta['kind']}): its bytes do not match the size/SHA-256 in the header "
                            "(a truncated upload?).")
        check_blob(meta["kind"], data, max_model_bytes, f"blob {i}")
        blobs[meta["sha256"]] = (meta["kind"], data)
    if pos != len(body):
        raise WireError(f"the body has {len(body) - pos} bytes after the blobs the header lists.")
    return header, blobs


def check_blob(kind: str, data: bytes, max_model_bytes: int, what: str) -> None:
    """Refuse a blob that is too large, not an ONNX model, or not a plain ``.npy`` array."""
    if kind == "onnx":
        if len(data) > max_model_bytes:
            raise WireError(f"{what}: ONNX model of {len(data)} bytes is larger than this agent's limit of "
                            f"{max_model_bytes} bytes; start the agent with a larger --max-model-mb.")
        problem = looks_like_onnx(data)
        if problem:
            raise WireError(f"{what} is not an ONNX model ({problem}); send a file written by torch.onnx.export or "
                            "onnx.save.")
    else:
        npy_to_array(data, what)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def looks_like_onnx(data: bytes) -> str:
    """``""`` when ``data`` parses as a protobuf message with an ONNX model's ``ir_version`` (field 1) and ``graph``
    (field 7); otherwise what is wrong. Only the top level is read (ONNX Runtime checks the rest)."""
    if not data:
        return "empty file"
    pos, seen = 0, set()
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if field == 0:
                return "field number 0 at the top level"
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                n, pos = _varint(data, pos)
                pos += n
            elif wire == 5:
                pos += 4
            else:
                return f"protobuf wire type {wire} at the top level"
            if pos > len(data):
                return "a field runs past the end of the file"
            seen.add((field, wire))
    except ValueError as e:
        return str(e)
    if (1, 0) not in seen or (7, 2) not in seen:
        return "no ir_version and graph fields"
    return ""


def array_to_npy(array: np.ndarray) -> bytes:
    """``array`` in ``.npy`` format (numeric dtypes only)."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise WireError(f"cannot send an array of dtype {array.dtype}; only numeric arrays travel to the agent.")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_to_array(data: bytes, what: str = "array") -> np.ndarray:
    """Read a ``.npy`` blob, never unpickling."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise WireError(f"{what} is not a plain .npy array: {e}") from None
    if not isinstance(array, np.ndarray):
        raise WireError(f"{what} is not a single .npy array.")
    return array


def to_json(value: Any) -> Any:
    """``value`` with NumPy arrays and scalars made JSON-able (arrays as ``{"__ndarray__": ...}``)."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        return {"__ndarray__": [arr.dtype.str, list(arr.shape), base64.b64encode(arr.tobytes()).decode("ascii")]}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_json(value: Any) -> Any:
    """The inverse of :func:`to_json`."""
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            dtype, shape, data = value["__ndarray__"]
            dt = np.dtype(dtype)
            if dt.hasobject:
                raise WireError(f"array of dtype {dtype} refused.")
            return np.frombuffer(base64.b64decode(data), dtype=dt).reshape(shape).copy()
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value
