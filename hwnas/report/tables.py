"""Tables as text, drawn by ``rich`` (the profile table, ``hwnas lut info``), so that hwnas prints them one way.

Example:
    >>> print(render_table(["metric", "value"], [["flops", "1.2M"]], title="demo"))  # doctest: +NORMALIZE_WHITESPACE
          demo
    ┏━━━━━━━━┳━━━━━━━┓
    ┃ metric ┃ value ┃
    ┡━━━━━━━━╇━━━━━━━┩
    │ flops  │  1.2M │
    └────────┴───────┘
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["render_table", "render", "lut_table", "format_number"]


def format_number(x: float) -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.4g}"


def render(*renderables: Any, width: int = 110) -> str:
    """``rich`` renderables as plain text (no colour codes), as printed on a terminal ``width`` wide."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False,
                      soft_wrap=False)
    for r in renderables:
        console.print(r)
    return buf.getvalue().rstrip("\n")


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
                 left: int = 1, width: int = 110) -> str:
    """A table as text: the first ``left`` columns aligned left (labels), the others right (numbers)."""
    from rich import box
    from rich.table import Table

    utf = "utf" in (getattr(sys.stdout, "encoding", None) or "").lower()
    table = Table(title=title, box=box.HEAVY_HEAD if utf else box.ASCII2)
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i < left else "right", overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return render(table, width=width)


def _num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}g}" if math.isfinite(v) else str(v)


def lut_table(lut: Any) -> str:
    """What ``hwnas lut info`` prints: the LUT's device, kernels, definition of latency and its calibration,
    numbers rounded to 4 significant digits (the file keeps them in full)."""
    n = [e.n for e in lut.entries.values()] or [0]
    c = dict(lut.calibration)
    refined = c.pop("refined", None) or {}
    selected = c.pop("selected", None) or {}
    rows = [["device", lut.device.name], ["file", str(lut.path or "-")],
            ["kernels", f"{len(lut.entries)} (each measured {min(n)}-{max(n)} times)"],
            ["build subnets", len(lut.subnets)], ["spaces", ", ".join(lut.spaces) or "-"]]
    d = lut.settings.get("definition") or {}
    if lut.definition == "steady":
        level = (f"steady-state median (level {d.get('ratio', 1.0):.4f} x paired "
                 f"{1000 * d.get('offset_ms', 0.0):+.2f} us from {d.get('subnets', '?')} subnets, "
                 f"{d.get('measured', '?')})" if d else "steady-state median")
    else:
        level = f"the {lut.definition!r} protocol's level (hwnas lut recalibrate brings it to steady state)"
    rows.append(["predicts", level])
    units = {"scale": "", "per_node_ms": " ms", "overhead_ms": " ms", "r2": "", "median_abs_rel_err": ""}
    for key, value in c.items():
        scale = 100 if key == "median_abs_rel_err" else 1
        text = f"{_num(value * scale)}%" if scale == 100 and isinstance(value, (int, float)) else \
            f"{_num(value)}{units.get(key, '')}"
        rows.append([f"calibration {key}", text])
    if refined:
        rows.append(["refinement", f"ridge {_num(refined.get('ridge'))} over {refined.get('subnets', '?')} subnets, "
                     f"median error {100 * refined.get('median_abs_rel_err', float('nan')):.2f}%"])
    if selected:
        rows.append(["fit selected", f"per-node term {'kept' if selected.get('per_node', True) else 'dropped'}, ridge "
                     f"{_num(selected.get('ridge'))}; {selected.get('folds', '?')}-fold cross-validated error "
                     f"{100 * selected.get('cv_rms', float('nan')):.2f}% (defaults "
                     f"{100 * selected.get('cv_rms_default', float('nan')):.2f}%)"])
    if lut.speed:
        rows.append(["speed factor", f"{lut.speed_factor:.4f} ({lut.speed.get('measured', '?')})"])
    if lut.adapted:
        src = lut.adapted.get("adapted_from", {})
        rows.append(["adapted from", f"{src.get('device', '?')} ({src.get('cpu_model', '?')}), {src.get('n', '?')} "
                     f"measurements, CV error {100 * src.get('cv_rms', float('nan')):.1f}%"])
    return render_table(["LUT", "value"], rows, left=2)
