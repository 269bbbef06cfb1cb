"""``hwnas demo``: the whole job end to end on scikit-learn's digits, on CPU, in a few minutes.

1. Load the 8x8 digits (1,797 images, shipped with scikit-learn), normalise them with the training
   set's mean and standard deviation, and split them 60/20/20 into train/val/test with a fixed
   permutation (the same split for every ``seed``).
2. Train the ``digits`` supernet once with the sandwich rule and in-place distillation.
3. Search with aging evolution under a latency budget (a :class:`~hwnas.LatencyProfiler` over the
   shipped LUT) and a FLOPs range filter; each candidate is scored by its validation accuracy with the
   shared weights after BN recalibration.
4. Export the best subnet and the largest and smallest, fine-tune each as a plain ``nn.Module``,
   export them to ONNX, measure their real ONNX Runtime latency and their ONNX accuracy.
5. Write the history CSV, the Pareto plot, the chosen subnet's per-layer latency CSV, its ONNX file,
   architecture JSON and fine-tuned weights (``chosen_finetuned.pt``, a state dict for
   ``hwnas.export(space, load_arch("chosen_arch.json"))``), and a JSON summary to the output folder;
   return the table.

torch runs on one thread during the demo (restored afterwards), like the ``cpu-ort-1t`` device the
LUT was built for, so timings are comparable and the two cores stay usable.

Example:
    >>> from hwnas.demo import run_demo
    >>> result = run_demo("hwnas-demo", quick=True, progress=False)     # doctest: +SKIP
    >>> print(result.table())                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hwnas
from hwnas.artifacts import resolve_lut
from hwnas.export import export, save_arch, to_onnx
from hwnas.hw import create_session, measure_many, paired_speed_factor, pairing_reference, reference_subnets
from hwnas.hw.lut import LUTError
from hwnas.hw.speed import at_model_speed, compare_with_build
from hwnas.io import atomic_write_json, atomic_write_text, atomic_writer
from hwnas.report.plots import plot_pareto
from hwnas.report.tables import format_number, render_table
from hwnas.search import (
    Chain,
    RangeProfilerFilter,
    RegularizedEvolution,
    SubnetEvaluator,
    SupernetTrainer,
    TensorBatches,
    build_profilers,
    evaluate_accuracy,
    finetune,
)
from hwnas.search import run as run_search

__all__ = ["DigitsData", "DemoRow", "DemoResult", "load_digits_data", "demo_latency_profiler", "run_demo",
           "SETTINGS", "DEFAULT_LUT"]

logger = logging.getLogger(__name__)

DEVICE = "cpu-ort-1t"
#: The demo's LUT: the shipped digits LUT of :data:`DEVICE`, by name (see :mod:`hwnas.artifacts`).
DEFAULT_LUT = f"digits_{DEVICE}"

#: Budgets of the full demo and of ``--quick`` (the test suite's).
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"epochs": 40, "batch_size": 64, "lr": 0.08, "num_random": 2, "trials": 200, "population": 40,
             "sample_size": 10, "finetune_epochs": 20, "finetune_lr": 0.02, "calib_batches": 6,
             "measure": {"warmup": 20, "repeats": 100, "rounds": 7}, "measure_layers": True},
    "quick": {"epochs": 2, "batch_size": 32, "lr": 0.1, "num_random": 1, "trials": 12, "population": 6,
              "sample_size": 3, "finetune_epochs": 1, "finetune_lr": 0.02, "calib_batches": 2,
              "measure": {"warmup": 3, "repeats": 10, "rounds": 3}, "measure_layers": False},
}

#: The demo's hard constraint (a share of the largest subnet's predicted latency) and FLOPs window.
LATENCY_BUDGET = "60%"
FLOPS_RANGE = ("15%", "60%")


@dataclass
class DigitsData:
    """The digits split: ``(N, 1, 8, 8)`` float inputs (normalised) and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float


def load_digits_data(split_seed: int = 0) -> DigitsData:
    """scikit-learn's digits as tensors: a fixed 60/20/20 split, normalised by the training statistics.

    Example:
        >>> d = load_digits_data()
        >>> tuple(d.x_train.shape), len(d.y_val), len(d.y_test)
        ((1078, 1, 8, 8), 359, 360)
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    parts = np.split(order, [n_train, n_train + n_val])
    mean, std = float(x[parts[0]].mean()), float(x[parts[0]].std())

    def tensors(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xs = torch.tensor((x[idx] - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8)
        return xs, torch.tensor(y[idx], dtype=torch.int64)

    (xtr, ytr), (xva, yva), (xte, yte) = (tensors(p) for p in parts)
    return DigitsData(xtr, ytr, xva, yva, xte, yte, mean, std)


def demo_latency_profiler(space: Any, dummy_input: torch.Tensor, graph: Any, lut: str | os.PathLike) -> Any:
    """The demo's latency profiler: :class:`hwnas.LatencyProfiler` over the shipped digits LUT.

    This is the one place the demo builds its latency model; swap it here to use another device's LUT
    or a learned predictor.
    """
    path = resolve_lut(lut)  # a shipped name, or a file
    if not path.exists():
        raise FileNotFoundError(f"the demo's latency LUT {str(path)!r} does not exist; give a shipped LUT by name "
                                f"(--lut {DEFAULT_LUT}) or build one with hwnas lut build --space digits "
                                f"--input 1,1,8,8 --device {DEVICE} --out {path} and pass it with --lut.")
    return hwnas.LatencyProfiler(space, dummy_input, lut=path, graph=graph)


@dataclass
class DemoRow:
    """One subnet of the demo's table."""

    name: str
    sample: dict[str, Any]
    flops: float
    params: float
    predicted_ms: float  # the LUT's figure, as the search and the per-layer CSV see it
    measured_ms: float
    val_acc_shared: float
    test_acc_shared: float
    test_acc_finetuned: float
    test_acc_onnx: float
    onnx_agreement: float
    predicted_now_ms: float = 0.0  # predicted_ms at the machine's speed now against the LUT build (its size's)


@dataclass
class DemoResult:
    """What the demo did, measured and wrote."""

    rows: list[DemoRow]
    out: Path
    files: dict[str, Path]
    constraints: dict[str, Any]
    num_trials: int
    seconds: float
    phases_s: dict[str, float] = field(default_factory=dict)
    search: Any = field(default=None, repr=False)
    speed_factor: float = 1.0
    speed_source: str = "the LUT's reference subnet"
    speed_curve: dict[str, float] = field(default_factory=dict)  # the speed check's size term (SpeedCheck.curve)

    def row(self, name: str) -> DemoRow:
        return next(r for r in self.rows if r.name == name)

    def table(self) -> str:
        """The results as a text table (``rich``), then what each column means and what was written."""
        rows = [[r.name, format_number(r.flops), format_number(r.params), f"{r.predicted_ms:.4f}",
                 f"{r.predicted_now_ms:.4f}", f"{r.measured_ms:.4f}", f"{r.val_acc_shared:.3f}",
                 f"{r.test_acc_shared:.3f}", f"{r.test_acc_finetuned:.3f}", f"{r.test_acc_onnx:.3f}"]
                for r in self.rows]
        lines = [render_table(["subnet", "FLOPs", "params", "LUT ms", "pred ms", "meas ms", "val acc", "test acc",
                               "fine-tuned", "ONNX"], rows), ""]
        lines.append("val/test acc: shared supernet weights after BN recalibration; fine-tuned: the exported subnet "
                     "after fine-tuning; ONNX: that model in ONNX Runtime. LUT ms: the LUT's prediction at its build's "
                     "speed, the level the search, its budget and pareto.png use; pred ms: that prediction times the "
                     f"machine's speed now against the LUT build ({self.speed_factor:.3f}, from {self.speed_source} "
                     f"measured in the same rounds{'; for each size, as they moved' if self.speed_curve else ''}), "
                     f"to compare with meas ms: ONNX Runtime ({DEVICE}) now, each run paired with the LUT's "
                     "reference subnet.")
        cons = ", ".join(f"{k} {v}" for k, v in self.constraints.items())
        lines.append(f"search: {self.num_trials} trials under {cons}; {self.seconds:.0f} s in all "
                     f"({', '.join(f'{k} {v:.0f} s' for k, v in self.phases_s.items())})")
        lines.append("written: " + ", ".join(str(p) for p in self.files.values()))
        return "\n".join(lines)


def _onnx_accuracy(path: Path, x: torch.Tensor, y: torch.Tensor, torch_pred: torch.Tensor) -> tuple[float, float]:
    """ONNX Runtime's test accuracy of a batch-1 model, and its agreement with torch's predictions."""
    session = create_session(path, DEVICE)
    name = session.get_inputs()[0].name
    preds = np.array([int(np.argmax(session.run(None, {name: x[i:i + 1].numpy()})[0])) for i in range(len(x))])
    return int((preds == y.numpy()).sum()) / len(y), float((preds == torch_pred.numpy()).mean())


def _save_state_dict(model: torch.nn.Module, path: Path) -> Path:
    """The model's state dict (tensors only: ``torch.load(path, weights_only=True)`` reads it), written atomically."""
    with atomic_writer(path) as f:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f)
    return path


def run_demo(out: str | os.PathLike = "hwnas-demo", quick: bool = False, seed: int = 0, progress: bool = True,
             lut: str | os.PathLike | None = None, threads: int = 1) -> DemoResult:
    """Train, search, export, fine-tune, export to ONNX and measure on digits; see the module docs.

    Args:
        out: the output folder (created).
        quick: the tiny budget of :data:`SETTINGS` ``["quick"]`` (for tests: well under a minute).
        seed: seeds torch, the data order, the supernet's sampling and the search.
        progress: show progress bars.
        lut: the latency LUT, a file or a shipped name (default: :data:`DEFAULT_LUT`, the shipped digits LUT).
        threads: torch threads during the demo.

    Returns:
        A :class:`DemoResult`; ``result.table()`` is what ``hwnas demo`` prints.
    """
    cfg = SETTINGS["quick" if quick else "full"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    phases: dict[str, float] = {}
    try:
        torch.manual_seed(seed)
        data = load_digits_data()
        space = hwnas.spaces.create("digits")
        x1 = torch.zeros(1, 1, 8, 8)
        profilers = build_profilers(space, x1)
        flops, params = profilers["flops"], profilers["params"]
        profilers["latency_ms"] = demo_latency_profiler(space, x1, flops.graph, lut or DEFAULT_LUT)
        latency = profilers["latency_ms"]
        train = TensorBatches(data.x_train, data.y_train, cfg["batch_size"], shuffle=True, seed=seed)
        val = TensorBatches(data.x_val, data.y_val, 512)
        test = TensorBatches(data.x_test, data.y_test, 512)

        logger.info("1/4 training the digits supernet (%d epochs, sandwich rule)", cfg["epochs"])
        t0 = time.perf_counter()
        opt = torch.optim.SGD(space.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=5e-5)
        SupernetTrainer(space, opt, sampling="sandwich", num_random=cfg["num_random"], distill=True,
                        seed=seed).fit(train, cfg["epochs"], progress=progress)
        phases["supernet"] = time.perf_counter() - t0

        logger.info("2/4 searching (%d trials)", cfg["trials"])
        t0 = time.perf_counter()
        evaluator = SubnetEvaluator(space, val, calib_loader=TensorBatches(data.x_train, data.y_train, 128,
                                                                           shuffle=True, seed=seed + 1),
                                    calib_batches=cfg["calib_batches"])
        strategy = Chain(RegularizedEvolution(cfg["population"], cfg["sample_size"], mutation_prob=0.1),
                         RangeProfilerFilter(flops, min=FLOPS_RANGE[0], max=FLOPS_RANGE[1]))
        constraints = {"latency_ms": LATENCY_BUDGET}
        files = {"history": out / "history.csv"}
        result = run_search(space, None, constraints, evaluator, strategy=strategy, max_trials=cfg["trials"],
                                  seed=seed, profilers=profilers, history_csv=files["history"], progress=progress)
        phases["search"] = time.perf_counter() - t0

        logger.info("3/4 exporting and fine-tuning the chosen, largest and smallest subnets")
        t0 = time.perf_counter()
        picks = {"largest": space.max_sample(), "smallest": space.min_sample(), "chosen": result.best_sample}
        subnets, shared = {}, {}
        for name, sample in picks.items():
            evaluator.prepare(sample)
            shared[name] = (evaluate_accuracy(space, val), evaluate_accuracy(space, test))
            subnets[name] = finetune(export(space, sample), train, cfg["finetune_epochs"], lr=cfg["finetune_lr"],
                                     progress=progress, desc=f"fine-tune {name}")
        phases["fine-tune"] = time.perf_counter() - t0

        logger.info("4/4 ONNX export, accuracy in ONNX Runtime, latency measurement")
        t0 = time.perf_counter()
        onnx_paths = {name: to_onnx(m, x1, out / f"{name}.onnx") for name, m in subnets.items()}
        files.update({f"{name}_onnx": p for name, p in onnx_paths.items()})
        # Each run between two runs of the LUT's pairing reference (as the LUT's own times were measured): the
        # machine's slow phases cancel, and the reference's time now against the build's says how much faster
        # or slower this machine runs than when the LUT was built (a shared host drifts by 10% and more).
        pair = pairing_reference(latency.lut, space, x1)
        pair_kw: dict[str, Any] = {}
        if pair is not None:
            pair_kw = {"reference": to_onnx(export(space, pair), x1, out / ".pairing_reference.onnx"),
                       "reference_input": x1, "min_turn_ms": 2.0}
        # a speed check in the same rounds: 16 of the LUT's build subnets, their times now over theirs at the build
        # (one reference model alone was 4% to 12% off the others' change on the shared host)
        try:
            refs = reference_subnets(latency.lut, space, x1, n=16, seed=seed)
        except LUTError:  # a LUT built before interleaved end-to-end passes: the pairing reference alone
            refs = []
        ref_paths = [to_onnx(export(space, r["sample"]), x1, out / f".speed_check_{i}.onnx") for i, r in enumerate(refs)]
        records = measure_many(list(onnx_paths.values()) + ref_paths, DEVICE, x1, seed=seed, progress=progress,
                               **cfg["measure"], **pair_kw)
        for path in ref_paths + ([pair_kw["reference"]] if pair is not None else []):
            path.unlink()
        checked, records = records[len(onnx_paths):], records[:len(onnx_paths)]
        # against the build; a LUT with a stored speed check already scales its costs by lut.speed_factor
        check = compare_with_build(latency.lut, refs, checked) if refs else None
        if check is not None:
            factor, speed_source = check.factor, f"{len(refs)} build subnets"
        else:
            factor = paired_speed_factor(latency.lut, x1, records) if pair is not None else None
            speed_source = "the LUT's reference subnet"
        speed = factor / latency.lut.speed_factor if factor else 1.0
        curve = check.curve() if check is not None else {}
        now = {"factor": factor or 1.0, "curve": curve}  # with a size term: the check's factor for each size
        rows = []
        for (name, sample), rec in zip(picks.items(), records):
            model = subnets[name].eval()
            with torch.no_grad():
                torch_pred = model(data.x_test).argmax(1)
            acc_torch = int((torch_pred == data.y_test).sum()) / len(data.y_test)
            acc_onnx, agree = _onnx_accuracy(onnx_paths[name], data.x_test, data.y_test, torch_pred)
            predicted = latency.profile(sample)
            rows.append(DemoRow(name, sample, flops.profile(sample), params.profile(sample), predicted,
                                rec.paired_ms if pair is not None else rec.median_ms,
                                shared[name][0], shared[name][1], acc_torch, acc_onnx, agree, at_model_speed(speed * predicted, now)))
        files["arch"] = save_arch(result.best_sample, out / "chosen_arch.json")
        files["weights"] = _save_state_dict(subnets["chosen"], out / "chosen_finetuned.pt")
        try:
            from hwnas.report.latency import latency_report

            layers = latency_report(space, result.best_sample, x1, profiler=latency, measure=cfg["measure_layers"])
            files["layers"] = out / "chosen_latency_layers.csv"
            atomic_write_text(files["layers"], layers.to_csv(index=False))
        except Exception as e:  # the per-layer report is a by-product: say why it is missing, keep the results
            logger.warning("could not write the per-layer latency report: %s", e)
        by_name = {r.name: r for r in rows}
        files["pareto"] = plot_pareto(
            result.history, x="latency_ms", y="score", path=out / "pareto.png",
            title=f"digits: val accuracy (shared weights) vs predicted latency, {len(result.history)} trials",
            x_label="latency_ms predicted by the LUT at its build's speed (the table's LUT ms)",
            y_label="val accuracy (shared weights)",
            highlight={n: {"latency_ms": by_name[n].predicted_ms, "score": by_name[n].val_acc_shared}
                       for n in ("largest", "smallest", "chosen")},
            budget=result.constraints[0].bound)
        phases["onnx+measure"] = time.perf_counter() - t0
        window = strategy.filters[0]
        demo = DemoResult(rows, out, files,
                          {"latency_ms": f"<= {result.constraints[0].bound:.4f} ms ({LATENCY_BUDGET} of the largest)",
                           "flops": f"in [{format_number(window.low_)}, {format_number(window.high_)}] "
                                    f"({FLOPS_RANGE[0]}-{FLOPS_RANGE[1]} of the largest)"},
                          len(result.history), time.perf_counter() - t_start, phases, result, speed, speed_source,
                          curve)
        files["summary"] = out / "summary.json"
        atomic_write_json(files["summary"], {
            "rows": [asdict(r) for r in rows], "constraints": demo.constraints, "trials": demo.num_trials,
            "seconds": demo.seconds, "phases_s": phases, "quick": quick, "seed": seed, "speed_factor": speed,
            "speed_source": speed_source, "speed_curve": curve, "settings": json.loads(json.dumps(cfg)),
            "torch_threads": threads})
        return demo
    finally:
        torch.set_num_threads(old_threads)
