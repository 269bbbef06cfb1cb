"""Multi-trial search: strategies, filters and chains, the constraint guarantee, checkpoint/resume after a
real kill, history CSV, executors, and error messages (checked by text)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import fvcore_flops, num_params, smallest_digits_flops

import hwnas
import hwnas.nn as hnn
from hwnas.artifacts import lut_path
from hwnas.profile.constraints import ConstraintError, metric_range
from hwnas.search import (
    Chain,
    CheckpointError,
    Filter,
    FuturesExecutor,
    Grid,
    Random,
    RangeProfilerFilter,
    RegularizedEvolution,
    RejectionError,
    SampleProfilerPenalty,
    SearchError,
    make_executor,
    read_history_csv,
)
from hwnas.search import run as search_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
LUT = lut_path("digits")  # the shipped digits LUT (cpu-ort-1t)
X = torch.zeros(1, 1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    space = hwnas.spaces.create("digits").eval()
    flops = hwnas.FlopsProfiler(space, X)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    return space, flops, params


def proxy_score(flops, params):
    """A cheap deterministic score: bigger is better, with a twist so that ties are rare."""
    def score(sample):
        return params.profile(sample) / 1e4 + 0.1 * (sample["s1.b1.kernel"] == 5) - flops.profile(sample) / 1e7
    return score


class Tiny(hnn.Space):
    def __init__(self):
        super().__init__()
        w = hnn.Choice([4, 8, 12], label="w")
        self.conv = hnn.Conv2d(1, w, hnn.Choice([1, 3], label="k"))
        self.fc = hnn.Linear(w, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def history_key(result):
    return [(t.index, t.batch, t.sample, t.score, t.metrics) for t in result.history]


# ------------------------------------------------------------------------------------------- strategies
def test_random_is_seeded_and_uniform(digits):
    space, *_ = digits
    a, b, c = Random(), Random(), Random()
    a.bind(space.choices(), 1)
    b.bind(space.choices(), 1)
    c.bind(space.choices(), 2)
    pa = [a.propose() for _ in range(200)]
    assert pa == [b.propose() for _ in range(200)]
    assert pa != [c.propose() for _ in range(200)]
    widths = [s["s2.width"] for s in pa]
    assert set(widths) == {32, 48, 64} and min(widths.count(w) for w in (32, 48, 64)) > 40
    for s in pa[:20]:
        space.validate(s)


def test_grid_enumerates_every_point_once_then_stops():
    g = Grid()
    g.bind(Tiny().choices())
    points = []
    while (s := g.propose()) is not None:
        points.append(s)
    assert len(points) == 6 and len({json.dumps(p, sort_keys=True) for p in points}) == 6
    assert points[0] == {"w": 4, "k": 1} and points[1] == {"w": 4, "k": 3}  # the last label varies fastest
    shuffled = Grid(shuffle=True)
    shuffled.bind(Tiny().choices(), 0)
    got = [shuffled.propose() for _ in range(6)]
    assert sorted(map(str, got)) == sorted(map(str, points)) and shuffled.propose() is None


def _grid_visits_each_distinct_subnet_once(space, x, n_subnets: int, n_export: int, trials: int) -> None:
    """The grid that hwnas.search runs proposes each subnet of ``space`` once (``n_subnets``, fewer than the label
    combinations where depth or an unchosen candidate leaves labels unused), checked by exporting ``n_export`` of
    them (distinct weights, modules or input resolution) and against the first ``trials`` trials of a search with Grid()."""
    from hwnas.space.space import canonicalizer

    g = Grid()
    g.bind(space.choices(), 0, canonicalizer(space))
    points = []
    while (s := g.propose()) is not None:
        points.append(s)
    assert len(points) == space.num_subnets() == n_subnets < math.prod(map(len, space.choices().values()))
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points)
    rng = np.random.default_rng(0)
    some = [points[i] for i in rng.choice(len(points), n_export, replace=False)]
    # different grid points are different networks (weights' shapes or modules: a pooling or an identity) or the
    # same network at another input resolution (a property of the input, not of the exported module)
    keys = {(tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()), repr(m), p.get("res"))
            for p, m in zip(some, (hwnas.export(space, p) for p in some))}
    assert len(keys) == n_export
    res = search_run(space, x, {}, lambda s: 0.0, strategy=Grid(), max_trials=trials, progress=False)
    assert [t.sample for t in res.history] == points[:trials]


def test_grid_in_a_search_visits_each_distinct_subnet_once():
    """A user space (conftest.UserCNN: depth 0-2 leaves block kernels unused, 1,296 label combinations) has 756
    subnets; the 24,300 of digits run with -m slow."""
    from conftest import UserCNN

    _grid_visits_each_distinct_subnet_once(UserCNN(), torch.zeros(1, 3, 32, 32), 756, 20, 100)


@pytest.mark.slow  # 12-40 s: the same check on 24,300 subnets (442,368 label combinations)
def test_grid_in_a_search_visits_each_distinct_subnet_of_digits_once():
    _grid_visits_each_distinct_subnet_once(hwnas.spaces.create("digits"), torch.zeros(1, 1, 8, 8), 24_300, 40, 500)


def test_grid_search_stops_when_exhausted_and_evaluates_only_feasible_points():
    space = Tiny()
    x = torch.zeros(1, 1, 8, 8)
    flops = hwnas.FlopsProfiler(space, x)
    bound = flops.profile({"w": 8, "k": 1})
    res = search_run(space, x, {"flops": bound}, lambda s: s["w"] * 10 + s["k"], strategy=Grid(),
                           max_trials=100, progress=False)
    grid = [{"w": w, "k": k} for w in (4, 8, 12) for k in (1, 3)]
    feasible = [s for s in grid if flops.profile(s) <= bound]
    assert res.stopped == "exhausted" and 1 < len(feasible) < 6
    assert [t.sample for t in res.history] == feasible
    assert res.best_sample == {"w": 8, "k": 1} and res.num_rejected == 6 - len(feasible)


def test_regularized_evolution_mutates_the_tournament_winner_and_ages(digits):
    space, *_ = digits
    evo = RegularizedEvolution(population_size=5, sample_size=5, mutation_prob=0.0)
    evo.bind(space.choices(), 0)
    for i in range(5):
        evo.tell(evo.propose(), float(i))
    members = [dict(s) for s, _ in evo.population_]
    for i in range(20):
        best = max(evo.population_, key=lambda m: m[1])[0]  # sample_size = population: the best always wins
        child = evo.propose()
        assert sum(child[k] != best[k] for k in child) == 1  # mutation_prob=0 still changes exactly one label
        evo.tell(child, 100.0 + i)
        assert len(evo.population_) == 5
    assert all(m not in [s for s, _ in evo.population_] for m in members)  # the first members died of age
    every = RegularizedEvolution(2, 1, mutation_prob=1.0)
    every.bind(space.choices(), 0)
    parent = space.max_sample()
    assert all(every._mutate(parent)[k] != v for k, v in parent.items())


def test_evolution_beats_random_on_a_proxy(digits):
    space, flops, params = digits
    score = proxy_score(flops, params)
    evo = search_run(space, X, {"flops": "50%"}, score, strategy=RegularizedEvolution(20, 5, 0.1),
                           max_trials=200, seed=0, progress=False)
    rnd = search_run(space, X, {"flops": "50%"}, score, strategy=Random(), max_trials=200, seed=0,
                           progress=False)
    assert evo.best_score > rnd.best_score


# ---------------------------------------------------------------------------------------------- filters
def test_range_filter_keeps_only_the_range_and_counts_rejections(digits):
    space, flops, _ = digits
    hi = metric_range(flops)[2]
    chain = Chain(Random(), RangeProfilerFilter(flops, min="20%", max="40%"))
    chain.bind(space.choices(), 0)
    samples = [chain.propose() for _ in range(100)]
    values = [flops.profile(s) for s in samples]
    assert min(values) >= 0.2 * hi and max(values) <= 0.4 * hi
    f = chain.filters[0]
    assert f.num_rejected_ == chain.num_rejected_ > 0 and chain.num_proposed_ == 100 + chain.num_rejected_
    absolute = Chain(Random(), RangeProfilerFilter(flops, min=3e5, max=None))
    absolute.bind(space.choices(), 0)
    assert all(flops.profile(absolute.propose()) >= 3e5 for _ in range(50))


def test_filter_sees_the_sample_and_chains_flatten(digits):
    space, flops, _ = digits
    seen = []

    def wide(sample):
        seen.append(sample)
        return sample["s2.width"] == 64

    inner = Chain(RegularizedEvolution(10, 3), Filter(wide))
    chain = Chain(inner, RangeProfilerFilter(flops, max="60%"))
    assert repr(chain).startswith("Chain(RegularizedEvolution(") and len(chain.filters) == 2
    chain.bind(space.choices(), 0)
    for _ in range(30):
        s = chain.propose()
        assert s["s2.width"] == 64 and flops.profile(s) <= 0.6 * metric_range(flops)[2]
        chain.tell(s, 1.0)
    assert all(isinstance(s, dict) for s in seen)
    # the filter ran first: samples it rejected never reached the range filter
    assert chain.filters[0].num_rejected_ > 0


def test_rejection_is_bounded_and_says_how_many_and_the_range(digits):
    space, flops, _ = digits
    # a lower bound near the largest subnet: rare under uniform draws (an upper bound would be met by drawing
    # from the feasible region instead, see test_hostile.py)
    chain = Chain(Random(), RangeProfilerFilter(flops, min=1.9e6), max_rejects=50)
    chain.bind(space.choices(), 0)
    with pytest.raises(RejectionError, match=r"50 candidates in a row were rejected.*RangeProfilerFilter\(flops, "
                                             r"min=1900000.0, max=None\) = \[1.9e\+06, inf\]: rejected 50 \(their "
                                             r"flops ran from .* to .*\).*max_rejects"):
        chain.propose()


def test_filter_errors_name_the_culprit(digits):
    space, flops, _ = digits
    bad = Chain(Random(), Filter(lambda s: None, name="my_filter"))
    bad.bind(space.choices(), 0)
    with pytest.raises(TypeError, match=r"Filter\(my_filter\) returned None .* must return True to keep"):
        bad.propose()
    with pytest.raises(ValueError, match=rf"misses every subnet: this space's flops spans {smallest_digits_flops()}"):
        Chain(Random(), RangeProfilerFilter(flops, max=1e4)).bind(space.choices(), 0)
    with pytest.raises(ValueError, match=r"min \(2e\+06\) is above max \(1e\+06\)"):
        Chain(Random(), RangeProfilerFilter(flops, min=2e6, max=1e6)).bind(space.choices(), 0)
    with pytest.raises(ValueError, match=r"neither min nor max"):
        Chain(Random(), RangeProfilerFilter(flops)).bind(space.choices(), 0)
    with pytest.raises(ValueError, match=r"max='sixty' is malformed.*'60%'"):
        Chain(Random(), RangeProfilerFilter(flops, max="sixty")).bind(space.choices(), 0)
    with pytest.raises(ValueError, match=r"sample_size must be an int in \[1, population_size=4\], got 5"):
        RegularizedEvolution(4, 5).bind(space.choices(), 0)
    with pytest.raises(RuntimeError, match=r"not bound to a space yet"):
        Random().propose()


# ------------------------------------------------------------------------------ the constraint guarantee
def test_constraint_guarantee_on_20_seeds_checked_independently(digits):
    space, flops, params = digits
    latency = hwnas.LatencyProfiler(space, X, lut=LUT, graph=flops.graph)
    constraints = {"flops": "35%", "params": 2.5e4, "latency_ms": "60%"}
    score = proxy_score(flops, params)
    fresh_latency = hwnas.LatencyProfiler(space, X, lut=LUT)  # built again, from the file
    hi = {"flops": metric_range(flops)[2],
          "latency_ms": metric_range(latency)[2]}
    for seed in range(20):
        strategy = RegularizedEvolution(8, 3, 0.1) if seed % 2 else Random()
        res = hwnas.search(space, X, constraints, score, strategy=strategy, max_trials=25, seed=seed,
                           profilers={"latency_ms": latency}, progress=False)
        subnet = res.subnet
        assert num_params(subnet) <= 2.5e4
        assert fvcore_flops(subnet, X) <= 0.35 * hi["flops"]
        assert fresh_latency.profile(res.best_sample) <= 0.6 * hi["latency_ms"]
        assert all(t.metrics["params"] <= 2.5e4 and t.metrics["flops"] <= 0.35 * hi["flops"] for t in res.history)


def test_no_feasible_candidate_is_a_clear_error():
    space = Tiny()
    x = torch.zeros(1, 1, 8, 8)
    flops = hwnas.FlopsProfiler(space, x)
    smallest = flops.profile({"w": 4, "k": 1})
    with pytest.raises(SearchError, match=r"no candidate met the constraints: 6 proposed by Chain\(Grid.*"
                                          r"Filter\(.*<lambda>\): rejected 1 \| constraint flops <= .*rejected 5"):
        search_run(space, x, {"flops": smallest}, lambda s: 1.0,
                         strategy=Chain(Grid(), Filter(lambda s: s != {"w": 4, "k": 1})), progress=False)


def test_constraint_errors_before_any_work(digits):
    space, *_ = digits
    calls = []

    def score(s):
        calls.append(s)
        return 0.0

    with pytest.raises(ConstraintError, match=r"unknown constraint 'latency'; this search has profilers for "
                                              r"\['flops', 'params'\]"):
        search_run(space, X, {"latency": 1.0}, score, progress=False)
    with pytest.raises(ConstraintError, match=r"flops='lots' is malformed"):
        search_run(space, X, {"flops": "lots"}, score, progress=False)
    with pytest.raises(ConstraintError, match=r"below the smallest subnet's params .* Loosen it to at least"):
        search_run(space, X, {"params": 10}, score, progress=False)
    with pytest.raises(ValueError, match=r"max_trials must be an int >= 1, got 0"):
        search_run(space, X, None, score, max_trials=0, progress=False)
    with pytest.raises(ValueError, match=r"mode must be 'max'"):
        search_run(space, X, None, score, mode="best", progress=False)
    with pytest.raises(TypeError, match=r"strategy must be a hwnas.search strategy"):
        search_run(space, X, None, score, strategy="evolution", progress=False)
    assert not calls
    with pytest.raises(TypeError, match=r"score_func returned 'good' \(str\) for trial 0; return a number"):
        search_run(space, X, None, lambda s: "good", progress=False)


class ActivationBytes:
    """A user's own profiler, without a hwnas cost model: float32 bytes of the widest feature map, by hand."""

    metric = "mem_bytes"

    def profile(self, sample):
        return 4.0 * 64 * max(sample["stem.width"], sample["s1.width"] * 4, sample["s2.width"] * 4)


def test_constraints_and_filters_over_a_profiler_without_a_cost_model(digits):
    space, flops, params = digits
    mem = ActivationBytes()
    c = space.choices()
    largest = 4.0 * 64 * max(max(c["stem.width"]), 4 * max(c["s1.width"]), 4 * max(c["s2.width"]))
    res = hwnas.search(space, X, {"mem_bytes": "50%", "flops": "80%"}, proxy_score(flops, params),
                       strategy=Chain(Random(), RangeProfilerFilter(mem, min=20_000)), max_trials=30, seed=0,
                       profilers={"mem_bytes": mem}, progress=False)
    assert [(k.metric, k.bound) for k in res.constraints] == [("mem_bytes", 0.5 * largest),
                                                               ("flops", 0.8 * metric_range(flops)[2])]
    assert all(20_000 <= mem.profile(t.sample) <= 0.5 * largest for t in res.history)
    assert res.best_metrics["mem_bytes"] == mem.profile(res.best_sample)
    with pytest.raises(ConstraintError, match=r"constraint mem_bytes='half' is malformed"):
        hwnas.search(space, X, {"mem_bytes": "half"}, lambda s: 0.0, profilers={"mem_bytes": mem}, progress=False)
    with pytest.raises(TypeError, match=r"ActivationBytes has no cost model .* give bounds and baselines for it as "
                                        r"numbers"):
        SampleProfilerPenalty(mem, "50%")
    assert SampleProfilerPenalty(mem, largest)(1.0, space.max_sample()) == 1.0


def test_rejection_mid_search_says_how_many_trials_were_kept(digits, tmp_path):
    space, flops, params = digits
    n = [0]

    def first_five(sample):  # keeps the first five candidates, then none
        n[0] += 1
        return n[0] <= 5

    with pytest.raises(RejectionError, match=r"50 candidates in a row were rejected.*This happened after 5 evaluated "
                                             r"trials; they are saved in the checkpoint '.*c\.json'\.$"):
        search_run(space, X, None, proxy_score(flops, params), strategy=Chain(Random(), first_five,
                         max_rejects=50), max_trials=20, checkpoint=tmp_path / "c.json", progress=False)
    assert len(json.loads((tmp_path / "c.json").read_text())["trials"]) == 5


def test_score_dict_extras_and_min_mode(digits):
    space, flops, _ = digits
    res = search_run(space, X, None, lambda s: {"score": flops.profile(s), "width": s["s2.width"]},
                           strategy=Random(), max_trials=30, mode="min", progress=False)
    assert res.best_score == min(t.score for t in res.history)
    assert all(t.extra["width"] == t.sample["s2.width"] for t in res.history)


# ------------------------------------------------------------------------------------ history and resume
def test_same_seed_same_history_and_csv_roundtrip(digits, tmp_path):
    space, flops, params = digits
    score = proxy_score(flops, params)
    kw = dict(strategy=Chain(RegularizedEvolution(10, 3), RangeProfilerFilter(flops, min="10%")), max_trials=40,
              seed=3, progress=False)
    a = search_run(space, X, {"params": "50%"}, score, history_csv=tmp_path / "h.csv", **kw)
    b = search_run(space, X, {"params": "50%"}, score, **kw)
    assert history_key(a) == history_key(b)
    back = read_history_csv(tmp_path / "h.csv")
    assert [(t.sample, t.score, t.metrics) for t in back] == [(t.sample, t.score, t.metrics) for t in a.history]
    header = (tmp_path / "h.csv").read_text().splitlines()[0].split(",")
    assert header == ["trial", "batch", "score", "flops", "params", "eval_s", "cached_from", "sample"]
    front = a.pareto_front("flops")
    assert front and all(x.value("flops") <= y.value("flops") for x, y in zip(front, front[1:]))


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch, hwnas
    from hwnas.search import run as search_run
    sys.path.insert(0, {tests!r})
    from test_search import resume_settings
    space, score, kw = resume_settings()
    n = [0]
    def killing_score(sample):
        n[0] += 1
        if n[0] > {kill_after}:
            os.kill(os.getpid(), signal.SIGKILL)   # a real kill: no finally, no atexit
        return score(sample)
    search_run(space, torch.zeros(1, 1, 8, 8), {{"flops": "60%"}}, killing_score,
                     checkpoint={ckpt!r}, **kw)
""")


def resume_settings():
    space = hwnas.spaces.create("digits")
    flops = hwnas.FlopsProfiler(space, X)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    kw = dict(strategy=Chain(RegularizedEvolution(8, 3, 0.1), RangeProfilerFilter(flops, min="15%")), max_trials=30,
              seed=7, progress=False, checkpoint_every_s=0.0)
    return space, proxy_score(flops, params), kw


def test_resume_after_a_real_kill_equals_an_uninterrupted_run(tmp_path):
    space, score, kw = resume_settings()
    full = search_run(space, X, {"flops": "60%"}, score, **kw)
    ckpt = tmp_path / "search.json"
    script = RESUME_SCRIPT.format(tests=str(ROOT / "tests"), kill_after=12, ckpt=str(ckpt))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    saved = json.loads(ckpt.read_text())["trials"]
    assert sum("repeat_of" not in t for t in saved) == 12  # every scored trial was on disk when the process died
    calls = []

    def counting(sample):
        calls.append(sample)
        return score(sample)

    resumed = search_run(space, X, {"flops": "60%"}, counting, checkpoint=ckpt,
                               **{k: v for k, v in kw.items()})
    # nothing re-evaluated, nothing lost (a repeated subnet reuses its score: score_func is never called twice)
    assert resumed.resumed_trials == len(saved) and len(calls) == sum(t.repeat_of < 0 for t in full.history[len(saved):])
    assert len({json.dumps(c, sort_keys=True) for c in calls}) == len(calls)
    assert history_key(resumed) == history_key(full)
    assert resumed.best_sample == full.best_sample


OUTSIDE_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import torch, hwnas
    from hwnas.search import run as search_run
    sys.path.insert(0, {tests!r})
    from test_search import resume_settings
    space, score, kw = resume_settings()
    def slow_score(sample):
        time.sleep(0.04)                          # a trial that takes a while, as training does
        return score(sample)
    search_run(space, torch.zeros(1, 1, 8, 8), {{"flops": "60%"}}, slow_score, checkpoint={ckpt!r}, **kw)
""")


def test_resume_after_a_kill_from_outside_equals_an_uninterrupted_run(tmp_path):
    """SIGKILL from the parent at whatever moment the child is in (scoring, or writing the checkpoint)."""
    space, score, kw = resume_settings()
    full = search_run(space, X, {"flops": "60%"}, score, **kw)
    ckpt = tmp_path / "search.json"
    script = OUTSIDE_KILL_SCRIPT.format(tests=str(ROOT / "tests"), ckpt=str(ckpt))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    seen, deadline = 0, time.monotonic() + 120
    try:
        while proc.poll() is None and seen < 7 and time.monotonic() < deadline:
            if ckpt.exists():  # written atomically: whenever it exists it is whole, valid JSON
                seen = len(json.loads(ckpt.read_text())["trials"])
            time.sleep(0.005)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9 and seen >= 7, err[-2000:]
    saved = len(json.loads(ckpt.read_text())["trials"])
    assert seen <= saved < 30
    calls = []

    def counting(sample):
        calls.append(sample)
        return score(sample)

    resumed = search_run(space, X, {"flops": "60%"}, counting, checkpoint=ckpt, **kw)
    assert resumed.resumed_trials == saved  # nothing re-evaluated, nothing lost
    assert len(calls) == sum(t.repeat_of < 0 for t in full.history[saved:])
    assert history_key(resumed) == history_key(full)


def test_an_error_in_score_func_saves_the_checkpoint_and_resume_continues(digits, tmp_path):
    space, flops, params = digits
    score = proxy_score(flops, params)
    kw = dict(strategy=RegularizedEvolution(6, 2), max_trials=20, seed=1, progress=False, checkpoint_every_s=3600)
    full = search_run(space, X, None, score, **kw)
    n = [0]

    def failing(sample):
        n[0] += 1
        if n[0] == 9:
            raise KeyboardInterrupt
        return score(sample)

    ckpt = tmp_path / "c.json"
    with pytest.raises(KeyboardInterrupt):
        search_run(space, X, None, failing, checkpoint=ckpt, **kw)
    assert sum("repeat_of" not in t for t in json.loads(ckpt.read_text())["trials"]) == 8
    resumed = search_run(space, X, None, score, checkpoint=ckpt, **kw)
    assert history_key(resumed) == history_key(full)
    more = search_run(space, X, None, score, checkpoint=ckpt, **{**kw, "max_trials": 25})
    assert history_key(more)[:20] == history_key(full) and len(more.history) == 25


def test_checkpoint_of_another_search_is_refused(digits, tmp_path):
    space, flops, params = digits
    score = proxy_score(flops, params)
    ckpt = tmp_path / "c.json"
    search_run(space, X, None, score, strategy=Random(), max_trials=5, seed=0, checkpoint=ckpt, progress=False)
    with pytest.raises(CheckpointError, match=r"belongs to another search \(seed: checkpoint has 0, this search has 1\)"
                                              r".*another checkpoint path"):
        search_run(space, X, None, score, strategy=Random(), max_trials=5, seed=1, checkpoint=ckpt,
                         progress=False)
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"is not a hwnas search checkpoint"):
        search_run(space, X, None, score, checkpoint=tmp_path / "junk.json", progress=False)


# ------------------------------------------------------------------------------------------- executors
def test_thread_pool_batches_are_reproducible(digits):
    space, flops, params = digits
    score = proxy_score(flops, params)
    kw = dict(strategy=RegularizedEvolution(6, 2), max_trials=17, seed=2, progress=False)
    with ThreadPoolExecutor(3) as pool:
        a = search_run(space, X, {"flops": "70%"}, score, executor=pool, **kw)
    b = search_run(space, X, {"flops": "70%"}, score, executor=FuturesExecutor(ThreadPoolExecutor(3)), **kw)
    assert history_key(a) == history_key(b)
    assert [t.batch for t in a.history][:7] == [0, 0, 0, 1, 1, 1, 2] and a.history[-1].batch == 5


@pytest.mark.slow  # 11 s (starts a Ray instance): .ci/run runs it as a step of its own
def test_ray_executor_on_a_local_instance(digits):
    """executor="ray" without an address starts a local Ray instance, evaluates there, and shuts it down."""
    ray = pytest.importorskip("ray")
    space, flops, params = digits
    table = {k: {v: float(i) for i, v in enumerate(vals)} for k, vals in space.choices().items()}

    def score(sample):  # a closure over plain data: Ray ships it by value
        return {"score": sum(table[k][v] * (1 + len(k) % 3) for k, v in sample.items()), "pid": os.getpid()}

    kw = dict(strategy=RegularizedEvolution(6, 2), max_trials=12, seed=4, progress=False)
    assert not ray.is_initialized()
    on_ray = search_run(space, X, {"flops": "70%"}, score, executor="ray", address=None, **kw)
    assert not ray.is_initialized()  # the instance it started is shut down again
    assert all(t.extra["pid"] != os.getpid() for t in on_ray.history)  # evaluated in Ray workers
    batch = sum(t.batch == 0 for t in on_ray.history)
    # as many trials in flight as the instance has CPUs: one on a 1-CPU runner (so no fixed ">= 2"), at most the
    # machine's; the local pool of that width then gives the same history
    assert 1 <= batch <= (os.cpu_count() or 1)
    with ThreadPoolExecutor(batch) as pool:
        local = search_run(space, X, {"flops": "70%"}, score, executor=pool, **kw)
    assert history_key(on_ray) == history_key(local)


def test_bad_executor_is_named():
    with pytest.raises(ValueError, match=r"executor must be None \(in-process\), 'ray'"):
        make_executor("dask")


# -------------------------------------------------------------------------------------------------- plots
def test_plot_pareto_writes_a_png(digits, tmp_path):
    space, flops, params = digits
    res = search_run(space, X, None, proxy_score(flops, params), strategy=Random(), max_trials=20,
                           history_csv=tmp_path / "h.csv", progress=False)
    path = hwnas.report.plot_pareto(res.history, x="flops", y="score", path=tmp_path / "p" / "pareto.png",
                                    budget=1e6, highlight={"largest": {"flops": 2e6, "score": 8.0}})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert hwnas.report.plot_pareto(tmp_path / "h.csv", x="params", path=tmp_path / "q.png").exists()
    with pytest.raises(KeyError, match=r"history has no column 'latency_ms'; it has \['score', 'flops', 'params'\]"):
        hwnas.report.plot_pareto(res, x="latency_ms", path=tmp_path / "r.png")


def test_cli_search(tmp_path, capsys):
    from hwnas.cli import main

    out = tmp_path / "s"
    assert main(["search", "--space", "digits", "--score", "params", "--constraint", "flops=40%", "--lut", str(LUT),
                 "--range", "latency_ms=:0.03", "--trials", "30", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "best score" in text and (out / "history.csv").exists() and (out / "pareto.png").exists()
    sample = hwnas.load_arch(out / "best_arch.json")
    space = hwnas.spaces.create("digits")
    flops = hwnas.FlopsProfiler(space, X)
    assert fvcore_flops(hwnas.export(space, sample), X) <= 0.4 * metric_range(flops)[2]
    # --range latency_ms=:0.03 held for every evaluated trial, by the LUT built again from its file
    latency = hwnas.LatencyProfiler(space, X, lut=LUT)
    history = read_history_csv(out / "history.csv")
    assert len(history) == 30 and all(latency.profile(t.sample) <= 0.03 for t in history)
    assert all(t.metrics["latency_ms"] == pytest.approx(latency.profile(t.sample)) for t in history)
    assert main(["search", "--space", "digits", "--score", "params", "--constraint", "flops=1", "--out",
                 str(out), "--no-progress"]) == 2
    assert "below the smallest subnet's flops" in capsys.readouterr().err
    assert main(["search", "--space", "digits", "--score", "params", "--constraint", "latency_ms=0.02", "--out",
                 str(out), "--no-progress"]) == 2
    assert "no metric 'latency_ms'; available: ['flops', 'params'] (latency_ms needs --lut" in capsys.readouterr().err
    assert os.path.exists(out / "best_arch.json")
