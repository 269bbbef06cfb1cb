"""The worker process of ``benchmarks/coverage.py``: one JSON task per stdin line, one ``RESULT {json}`` line
per task on stdout. Everything a model prints goes to stderr (the worker's log)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fvcore_count as _fvcore_count  # noqa: E402
from _coverage_summary import pattern  # noqa: E402

import hwnas  # noqa: E402

N_SUBNETS = 3
TEXT_LEN = 64


def _conv_mode_flops(inputs, outputs) -> int:
    """fvcore's convolution formula for ``aten::_convolution_mode`` (a convolution with string padding,
    ``padding="same"``), for which fvcore has no handle and counts 0 (see docs/profiling.md)."""
    from fvcore.nn.jit_handles import get_shape

    w, out = get_shape(inputs[1]), get_shape(outputs[0])
    return int(torch.tensor(out).prod()) * int(torch.tensor(w[1:]).prod())


def fvcore_count(module, x) -> float:
    """fvcore's FLOP count, with the handle it lacks for ``aten::_convolution_mode``."""
    import fvcore.nn

    original = fvcore.nn.FlopCountAnalysis.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        self.set_op_handle("aten::_convolution_mode", _conv_mode_flops)

    fvcore.nn.FlopCountAnalysis.__init__ = init
    try:
        return _fvcore_count(module, x)
    finally:
        fvcore.nn.FlopCountAnalysis.__init__ = original


# --------------------------------------------------------------------------------------------- building
def _forward(model, x):
    with torch.no_grad():
        return model(*x) if isinstance(x, tuple) else model(x)


def _image(res: int | tuple) -> torch.Tensor:
    h, w = (res, res) if isinstance(res, int) else res
    return torch.randn(1, 3, h, w)


def build_timm(name: str, res: int):
    """The model and input at ``res``; a fixed-size model is rebuilt with ``img_size=res`` or run native."""
    import timm

    model = timm.create_model(name, pretrained=False).eval()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    native = tuple(cfg.get("input_size", (3, 224, 224))[1:])
    fixed = bool(cfg.get("fixed_input_size"))
    if not fixed:
        try:
            _forward(model, _image(res))
            return model, _image(res), ""
        except Exception as e:
            why = f"fails at {res} px ({type(e).__name__})"
    else:
        why = "fixed input size"
    try:
        model = timm.create_model(name, pretrained=False, img_size=res).eval()
        _forward(model, _image(res))
        return model, _image(res), f"{why}: built with img_size={res}"
    except Exception:
        model = timm.create_model(name, pretrained=False).eval()
        return model, _image(native), f"{why}: native {native[0]}x{native[1]} used"


def build_torchvision(name: str, res: int):
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    try:
        _forward(model, _image(res))
        return model, _image(res), ""
    except Exception as e:
        why = f"fails at {res} px ({type(e).__name__})"
    try:
        model = torchvision.models.get_model(name, weights=None, image_size=res).eval()
        _forward(model, _image(res))
        return model, _image(res), f"{why}: built with image_size={res}"
    except Exception:
        model = torchvision.models.get_model(name, weights=None).eval()
        return model, _image(224), f"{why}: native 224x224 used"


def build_hf(name: str, res: int):
    """Small random-init configs (no download); outputs as tuples (``return_dict=False``)."""
    import transformers as tf

    small = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512}
    if name == "BertModel":
        model = tf.BertModel(tf.BertConfig(vocab_size=1000, return_dict=False, **small))
    elif name == "GPT2Model":
        model = tf.GPT2Model(tf.GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4, n_inner=512,
                                           use_cache=False, return_dict=False))  # fvcore: tensors out only
    elif name == "ViTModel":
        model = tf.ViTModel(tf.ViTConfig(image_size=res, patch_size=16, return_dict=False, **small))
        return model.eval(), _image(res), ""
    else:
        raise ValueError(f"unknown Hugging Face model {name!r}; expected BertModel, GPT2Model or ViTModel")
    ids = torch.randint(0, 1000, (1, TEXT_LEN))
    return model.eval(), ids, f"text: input_ids 1x{TEXT_LEN} (any --res)"


BUILDERS = {"timm": build_timm, "torchvision": build_torchvision, "hf": build_hf}


# --------------------------------------------------------------------------------------------- checks
def _leaves(y) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (tuple, list)):
        return [t for v in y for t in _leaves(v)]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _leaves(v)]
    return []


def close(got, want) -> bool:
    """Every tensor output equal up to float rounding: ``max|d| <= 1e-4 * max(1, max|want|)``."""
    a, b = _leaves(got), _leaves(want)
    if len(a) != len(b) or not a:
        return False
    for g, w in zip(a, b):
        if g.shape != w.shape:
            return False
        scale = max(1.0, float(w.float().abs().max())) if w.numel() else 1.0
        if g.numel() and float((g.float() - w.float()).abs().max()) > 1e-4 * scale:
            return False
    return True


def numel(m) -> int:
    return sum(p.numel() for p in m.parameters())


def error_fields(prefix: str, e: BaseException) -> dict:
    """Error class, first line of the message, its pattern, and the innermost hwnas frame that raised it."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/hwnas/" in f.filename]
    f = frames[-1] if frames else None
    where = f"{f.filename.rsplit('/hwnas/', 1)[1]}:{f.lineno} {f.name}" if f else ""
    return {f"{prefix}_error": type(e).__name__, f"{prefix}_message": msg[:400],
            f"{prefix}_pattern": pattern(type(e).__name__, msg), f"{prefix}_where": where}


def check(task: dict) -> dict:
    torch.manual_seed(0)
    out: dict = {}
    t0 = time.perf_counter()
    model, x, note = BUILDERS[task["source"]](task["model"], int(task["res"]))
    out["note"] = note
    out["input"] = "x".join(map(str, x.shape))
    out["params"] = numel(model)
    y = _forward(model, x)
    try:
        out["fvcore_flops"] = int(fvcore_count(model, x))
        out["fvcore_ok"] = "yes"
    except Exception as e:
        out["fvcore_ok"] = "no"
        out.update(error_fields("fvcore", e))
    try:
        flops = hwnas.FlopsProfiler(model, x)
        params = hwnas.NumParamsProfiler(model, graph=flops.graph)
        out["hwnas_flops"] = int(round(flops.profile({})))
        out["hwnas_params"] = int(round(params.profile({})))
        out["profile_ok"] = "yes"
        out["flops_equal"] = _yes(out.get("fvcore_ok") == "yes" and out["hwnas_flops"] == out["fvcore_flops"])
        out["params_equal"] = _yes(out["hwnas_params"] == out["params"])
        if flops.uncounted_ops:
            out["uncounted_ops"] = " ".join(sorted(flops.uncounted_ops))
    except Exception as e:
        out["profile_ok"] = "no"
        out.update(error_fields("profile", e))
    try:
        t1, c1 = time.perf_counter(), time.process_time()
        space = hwnas.convert(model, x)
        out["convert_s"] = round(time.perf_counter() - t1, 3)
        out["convert_cpu_s"] = round(time.process_time() - c1, 3)
        out["convert_ok"] = "yes"
        out["labels"] = len(space.choices())
    except Exception as e:
        out["convert_ok"] = "no"
        out.update(error_fields("convert", e))
        out["check_s"] = round(time.perf_counter() - t0, 1)
        return out
    out.update(check_space(space, model, x, y))
    out["check_s"] = round(time.perf_counter() - t0, 1)
    return out


def check_space(space, model, x, y) -> dict:
    out: dict = {}
    try:
        largest = hwnas.export(space, space.max_sample()).eval()
        out["largest_equal"] = _yes(close(_forward(largest, x), y))
    except Exception as e:
        out["largest_equal"] = "error"
        out.update(error_fields("subnet", e))
        return out
    if not space.choices():
        return out
    try:
        flops = hwnas.FlopsProfiler(space, x)
        params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    except Exception as e:
        out.update(error_fields("subnet", e))
        out["subnets_flops_ok"] = out["subnets_params_ok"] = "error"
        return out
    ok_f = ok_p = 0
    worst = 0.0
    for seed in range(N_SUBNETS):
        sample = space.random_sample(seed)
        try:
            sub = hwnas.export(space, sample).eval()
            want = fvcore_count(sub, x)
            got = flops.profile(sample)
            ok_f += int(round(got)) == int(want)
            worst = max(worst, abs(got - want) / max(want, 1))
            ok_p += int(round(params.profile(sample))) == numel(sub)
        except Exception as e:
            out.update(error_fields("subnet", e))
    out["subnets_flops_ok"] = f"{ok_f}/{N_SUBNETS}"
    out["subnets_params_ok"] = f"{ok_p}/{N_SUBNETS}"
    if worst:
        out["subnets_flops_worst_rel"] = f"{worst:.3g}"
    return out


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def warm_up() -> None:
    """One tiny convert, profile and fvcore count, so the first model's convert time holds no imports."""
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    space = hwnas.convert(tiny, x)
    hwnas.FlopsProfiler(space, x).profile(space.max_sample())
    fvcore_count(hwnas.export(space, space.min_sample()), x)


def main() -> None:
    result_out = os.fdopen(os.dup(1), "w")  # results only; the models' own prints go to stderr
    os.dup2(2, 1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    warm_up()
    result_out.write("READY\n")
    result_out.flush()
    for line in sys.stdin:
        task = json.loads(line)
        try:
            res = check(task)
            res["status"] = "done"
        except Exception as e:  # the model itself cannot be built or run
            res = {"status": "build failed", **error_fields("build", e)}
        result_out.write("RESULT " + json.dumps(res) + "\n")
        result_out.flush()


if __name__ == "__main__":
    main()
