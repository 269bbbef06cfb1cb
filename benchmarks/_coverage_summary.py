"""The summary of ``benchmarks/coverage.py``: coverage per source and resolution, and failures by pattern."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict

FIELDS = ["source", "family", "model", "params_m", "res", "input", "note", "status", "params", "fvcore_ok",
          "fvcore_flops", "profile_ok", "hwnas_flops", "flops_equal", "hwnas_params", "params_equal",
          "uncounted_ops", "convert_ok", "convert_s", "convert_cpu_s", "labels", "largest_equal", "subnets_flops_ok",
          "subnets_params_ok", "subnets_flops_worst_rel", "profile_error", "profile_pattern",
          "profile_message", "profile_where", "convert_error", "convert_pattern", "convert_message",
          "convert_where", "subnet_error", "subnet_pattern", "subnet_message", "subnet_where", "fvcore_error",
          "fvcore_message", "build_error", "build_message", "check_s", "wall_s", "hwnas"]

SOURCES = {"timm": "timm families", "torchvision": "torchvision classification",
           "hf": "Hugging Face (config)"}


_RULE = re.compile(r"no shape rule for (module [\w.]+\.(\w+)|tensor method (\.\w+\(\))|function ([\w.<>]+))")
_UNTRACE = re.compile(r"torch\.fx could not trace .*?(?:in its submodule '[^']*' \((\w+)\))?"
                      r"(?: at (?:\S*/)?([^/\s]+):\d+: `([^`]*)`)?: (.*)")


def pattern(cls: str, msg: str) -> str:
    """A short key that groups failures of the same cause: the op, module or message with numbers blanked."""
    m = _RULE.search(msg)
    if m:
        return "no shape rule: " + (f"module {m.group(2)}" if m.group(2) else m.group(3) or m.group(4))
    m = re.search(r"no FLOP rule for op '([^']+)'", msg)
    if m:
        return f"no FLOP rule: {m.group(1)}"
    m = _UNTRACE.search(msg)
    if m and cls == "UntraceableError":
        where = m.group(1) or (f"{m.group(2)}: `{m.group(3)[:50]}`" if m.group(2) else "root")
        cause = re.sub(r"\d+", "N", m.group(4).split(". Data-dependent")[0])[:70]
        return f"untraceable ({where}): {cause}"
    m = re.search(r"fails on the dummy input of shape\(s\) \[.*?\]: (\w+): (.*)", msg)
    if cls == "ConversionError" and m:
        return "convert's forward fails: " + pattern(m.group(1), m.group(2))
    short = re.sub(r"'[^']{40,}'", "'…'", msg)  # keep short quoted names (ops, attributes), drop long ones
    short = re.sub(r"\(\d+(, \d+)*\)|\[\d+(, \d+)*\]", "(…)", short)
    short = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", short)
    short = re.sub(r"\b([A-Za-z]\w*?)_N\b", r"\1", short)  # fx node names: add_28 -> add
    return f"{cls}: {short[:100]}"


def searchable(r: dict) -> bool:
    """Converted, at least one label, and the largest subnet computes what the model computes."""
    return r.get("convert_ok") == "yes" and int(r.get("labels") or 0) > 0 and r.get("largest_equal") == "yes"


def subnets_exact(r: dict) -> bool:
    f, p = r.get("subnets_flops_ok", ""), r.get("subnets_params_ok", "")
    return bool(f) and "/" in f and f.split("/")[0] == f.split("/")[1] and p == f


def _frac(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f}%)" if n else "0/0"


def coverage_rows(rows: list[dict]) -> list[list[str]]:
    """One line per (source, resolution)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["source"], int(r["res"]))].append(r)
    out = []
    for (source, res), rs in sorted(groups.items(), key=lambda kv: (list(SOURCES).index(kv[0][0]), kv[0][1])):
        counted = [r for r in rs if r.get("fvcore_ok") == "yes"]
        exact = [r for r in counted if r.get("flops_equal") == "yes"]
        prof = [r for r in rs if r.get("profile_ok") == "yes"]
        params = [r for r in prof if r.get("params_equal") == "yes"]
        conv = [r for r in rs if r.get("convert_ok") == "yes"]
        search = [r for r in rs if searchable(r)]
        sub = [r for r in search if subnets_exact(r)]
        times = [(float(r["convert_s"]), r["model"]) for r in conv if r.get("convert_s")]
        slow = max(times) if times else (0.0, "-")
        med = statistics.median(t for t, _ in times) if times else 0.0
        cpu = [(float(r["convert_cpu_s"]), r["model"]) for r in conv if r.get("convert_cpu_s")]
        cpu_slow = max(cpu) if cpu else (0.0, "-")
        over = sum(t > 3.0 for t, _ in cpu)
        lost = sum(r.get("status") != "done" for r in rs)
        out.append([SOURCES[source], str(res), str(len(rs)), _frac(len(exact), len(counted)),
                    _frac(len(prof), len(rs)), _frac(len(params), len(prof)), _frac(len(conv), len(rs)),
                    _frac(len(search), len(rs)), _frac(len(sub), len(search)), f"{med:.2f}",
                    f"{slow[0]:.2f} ({slow[1]})",
                    f"{statistics.median(t for t, _ in cpu):.2f}" if cpu else "-",
                    f"{cpu_slow[0]:.2f} ({cpu_slow[1]})" if cpu else "-", f"{over}/{len(cpu)}" if cpu else "-",
                    str(lost)])
    return out


def failure_patterns(rows: list[dict]) -> list[list[str]]:
    """Failures grouped by pattern: the stages it hit, how many timm families / torchvision / HF models,
    and up to two examples."""
    order = ["run", "fvcore", "profile", "convert", "subnets"]
    groups: dict[str, dict] = {}
    for r in rows:
        for stage in ("profile", "convert", "subnet"):
            if r.get(f"{stage}_error"):
                r[f"{stage}_pattern"] = pattern(r[f"{stage}_error"], r.get(f"{stage}_message", ""))
        merged: dict[str, set] = {}
        for stage, key in _stage_failures(r):
            merged.setdefault(key, set()).add(stage)
        for key, stages in merged.items():
            g = groups.setdefault(key, {"timm": set(), "torchvision": set(), "hf": set(), "ex": [],
                                        "st": set()})
            g[r["source"]].add(r["family"])
            g["st"] |= stages
            if len(g["ex"]) < 2 and not any(e.startswith(r["model"] + "@") for e in g["ex"]):
                g["ex"].append(f"{r['model']}@{r['res']}")
    out = [["+".join(s for s in order if s in g["st"]), key, str(len(g["timm"])), str(len(g["torchvision"])),
            str(len(g["hf"])), ", ".join(g["ex"])] for key, g in groups.items()]
    return sorted(out, key=lambda r: (-(int(r[2]) + int(r[3]) + int(r[4])), r[1]))


def _stage_failures(r: dict) -> list[tuple[str, str]]:
    if r.get("status") != "done":
        return [("run", r.get("status", "") + (f": {r['build_error']}: {r['build_message'][:80]}"
                                               if r.get("build_error") else ""))]
    out = []
    if r.get("fvcore_ok") == "no":
        out.append(("fvcore", f"{r.get('fvcore_error')}: {r.get('fvcore_message', '')[:80]}"))
    if r.get("profile_ok") == "no":
        out.append(("profile", r.get("profile_pattern", "")))
    elif r.get("fvcore_ok") == "yes" and r.get("flops_equal") == "no":
        out.append(("profile", "FLOPs != fvcore"))
    if r.get("profile_ok") == "yes" and r.get("params_equal") == "no":
        out.append(("profile", "params != numel"))
    if r.get("convert_ok") == "no":
        out.append(("convert", r.get("convert_pattern", "")))
    elif r.get("convert_ok") == "yes":
        if str(r.get("labels")) == "0":
            out.append(("convert", "0 labels (nothing to search)"))
        if r.get("largest_equal") not in ("yes", None, ""):
            out.append(("convert", f"largest subnet != original ({r.get('largest_equal')})"))
        if r.get("subnet_pattern"):
            out.append(("subnets", r["subnet_pattern"]))
        elif searchable(r) and not subnets_exact(r):
            out.append(("subnets", f"random subnets: FLOPs {r.get('subnets_flops_ok')}, params "
                                   f"{r.get('subnets_params_ok')} exact"))
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]


def summarize(rows: list[dict], version: str) -> str:
    """The markdown summary: coverage table, convert times, failure patterns, FLOPs mismatches."""
    rows = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]  # as read from the CSV
    lines = [f"# hwnas coverage of real models ({version})", "",
             "Random init, batch 1, eval mode. 'exact' = hwnas FLOPs == fvcore among models fvcore counts; "
             "'searchable' = convert ok, >= 1 label, largest subnet == original; 'subnets exact' = 3 random "
             "subnets' FLOPs == fvcore of their export and params == numel. fvcore is given the handle it lacks "
             "for aten::_convolution_mode (a convolution with padding='same', which it counts 0; see "
             "docs/profiling.md). Convert times are seconds on a shared 2-core host: 'convert s' is wall time, "
             "'convert CPU s' the worker's CPU time in the conversion (torch at 1 thread: about its wall time "
             "on an idle core; the time other processes took from it is not in it).", ""]
    header = ["models", "res", "n", "FLOPs == fvcore", "profile ok", "params == numel", "convert ok",
              "searchable", "subnets exact", "convert s median", "convert s max", "convert CPU s median",
              "convert CPU s max", "CPU > 3 s", "timeout/crash"]
    lines += _table(header, coverage_rows(rows)) + [""]
    notes = [r for r in rows if r.get("note")]
    if notes:
        lines += ["Input sizes other than asked:", ""]
        lines += [f"- {r['model']}@{r['res']}: {r['note']} (input {r.get('input')})" for r in notes] + [""]
    lines += ["## Failures by pattern", "", "Counts are timm families / torchvision models / HF models (over "
              "all resolutions run); stage 'profile' = FlopsProfiler/NumParamsProfiler of the plain model.",
              ""]
    lines += _table(["stage", "pattern", "timm", "tv", "hf", "examples"], failure_patterns(rows)) + [""]
    diff = [r for r in rows if r.get("flops_equal") == "no" and r.get("fvcore_ok") == "yes"]
    if diff:
        lines += ["## FLOPs != fvcore", ""]
        lines += _table(["model", "res", "hwnas", "fvcore", "ratio", "uncounted ops"],
                        [[r["model"], str(r["res"]), r["hwnas_flops"], r["fvcore_flops"],
                          f"{int(r['hwnas_flops']) / max(int(r['fvcore_flops']), 1):.4f}",
                          r.get("uncounted_ops", "")] for r in diff]) + [""]
    return "\n".join(lines)
