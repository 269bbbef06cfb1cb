"""Hostile and careless input (issue 18): no silent wrong number, no lost work, no hang, no raw traceback.

Each case ends in a documented hwnas error that names the culprit, or in a valid result that is checked
against an independent reference (fvcore, the subnet's own forward pass, a uniform rejection sampler, an
uninterrupted run). The fuzz tests (``hypothesis``) throw random arch JSON and constraint strings at the
readers: 500 examples each, every one must end in a documented error or a valid result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fvcore_flops, smallest_digits_flops
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hwnas
from hwnas.cli import main
from hwnas.io import FileInUseError, atomic_write_json, lock_file, read_json, remove_stale_temps
from hwnas.profile.constraints import ConstraintError, metric_range, parse_constraints
from hwnas.search import (
    Chain,
    CheckpointError,
    ConstraintFilter,
    Random,
    RegularizedEvolution,
    RejectionError,
    SampleProfilerPenalty,
    read_history_csv,
)
from hwnas.search import run as search_run
from hwnas.space import Choice, SampleError, validate_sample

ROOT = Path(__file__).resolve().parents[1]
X = torch.zeros(1, 1, 8, 8)
FUZZ = settings(max_examples=500, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def digits():
    space = hwnas.spaces.create("digits").eval()
    flops = hwnas.FlopsProfiler(space, X)
    params = hwnas.NumParamsProfiler(space, graph=flops.graph)
    return space, flops, params


class HalfNaN:
    """A custom profiler (no cost model) that returns NaN for every subnet with s1.width == 32."""

    metric = "energy"

    def profile(self, sample):
        return float("nan") if sample["s1.width"] == 32 else float(sample["s2.width"])


# --------------------------------------------------------------------------------------- NaN metrics
def test_nan_metric_breaks_a_hard_constraint_and_names_the_profiler(digits, caplog):
    space, flops, _ = digits
    prof = HalfNaN()
    with caplog.at_level(logging.WARNING, logger="hwnas"):
        result = search_run(space, X, {"energy": 48}, lambda s: float(s["s1.width"]), strategy=Random(),
                                  max_trials=40, seed=0, profilers={"energy": prof}, progress=False)
    # independent check: no trial has the NaN subnets, and every returned metric is a finite number
    assert all(t.sample["s1.width"] != 32 for t in result.history)
    assert result.best_sample["s1.width"] == 24 and math.isfinite(result.best_metrics["energy"])
    assert result.num_rejected > 0
    assert any("HalfNaN for energy returned nan for sample" in r.getMessage() for r in caplog.records)


def test_only_nan_metrics_end_in_a_rejection_error_not_an_internal_error(digits):
    space, *_ = digits

    class AllNaN:
        def profile(self, sample):
            return float("nan") if sample["stem.width"] != 8 else 1.0

    with pytest.raises(RejectionError, match=r"returned NaN or infinity"):
        search_run(space, X, {"energy": 2.0},
                         lambda s: 1.0, strategy=Chain(Random(), lambda s: s["stem.width"] != 8, max_rejects=200),
                         max_trials=5, profilers={"energy": AllNaN()}, progress=False)


def test_nan_in_the_cost_tables_refuses_percentages_and_penalties(digits):
    space, *_ = digits
    flops = hwnas.FlopsProfiler(space, X)
    flops.model.const = float("nan")  # as a LUT with overhead_ms: NaN would make it
    flops.model._compile()
    assert math.isnan(flops.profile(space.max_sample()))
    with pytest.raises(ConstraintError, match=r"largest flops over the space is nan because FlopsProfiler.*gives NaN"):
        parse_constraints({"flops": "50%"}, {"flops": flops})
    with pytest.raises(ValueError, match=r"FlopsProfiler gives nan as the largest"):
        SampleProfilerPenalty(flops, baseline="50%")
    penalty = SampleProfilerPenalty(flops, baseline=1e6)
    with pytest.raises(ValueError, match=r"FlopsProfiler gave the cost nan for sample .*needs a finite cost"):
        penalty(1.0, space.max_sample())


# ------------------------------------------------------------------------------------ type coercion
@pytest.mark.parametrize("value", [32.0, np.float64(32), np.int64(32), np.int32(32)])
def test_integral_values_are_coerced_to_plain_ints_and_export(digits, value):
    space, flops, _ = digits
    sample = space.max_sample()
    reference = hwnas.export(space, dict(sample))
    sample["s1.width"] = value
    assert space.validate(sample) is sample
    assert type(sample["s1.width"]) is int and sample["s1.width"] == 32
    json.dumps(sample)  # plain JSON now
    subnet = hwnas.export(space, sample)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(subnet.eval()(x), reference.eval()(x))  # the same subnet as with the int


@pytest.mark.parametrize("value, message", [
    (True, r"got value True \(bool\).*\[16, 24, 32\]"),
    ("32", r"got value '32' \(str\).*write 32 without quotes"),
    (32.5, r"got value 32.5 \(float\).*integral"),
    (float("nan"), r"got value nan"),
    ([32], r"got value \[32\] \(list\)"),
])
def test_non_integral_bool_and_string_values_are_refused(digits, value, message):
    space, *_ = digits
    sample = {**space.max_sample(), "s1.width": value}
    with pytest.raises(SampleError, match=r"label 's1.width' " + message):
        space.validate(sample)


def test_a_bool_never_stands_for_one_and_back():
    choices = {"expand": Choice([1, 2], label="expand"), "se": Choice([False, True], label="se")}
    with pytest.raises(SampleError, match=r"label 'expand' got value True \(bool\).*a bool is not a number here: "
                                          r"write 1"):
        validate_sample(choices, {"expand": True, "se": True})
    with pytest.raises(SampleError, match=r"label 'se' got value 1 \(int\)"):
        validate_sample(choices, {"expand": 1, "se": 1})
    sample = {"expand": np.int64(2), "se": np.bool_(True)}
    validate_sample(choices, sample)
    assert type(sample["expand"]) is int and sample["se"] is True


# --------------------------------------------------------------------------------------- checkpoints
def _checkpoint(digits, tmp_path, n=10, **kw):
    space, flops, params = digits
    ckpt = tmp_path / "c.json"
    score = lambda s: params.profile(s) / 1e4 - flops.profile(s) / 1e7  # noqa: E731
    kw = dict(strategy=RegularizedEvolution(6, 2), seed=3, progress=False, **kw)
    full = search_run(space, X, {"flops": "70%"}, score, max_trials=n, checkpoint=ckpt, **kw)
    return space, ckpt, score, kw, full


def _edit(ckpt, fn):
    data = json.loads(ckpt.read_text())
    fn(data)
    ckpt.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["trials"][3]["metrics"].update(flops=1.0), r"trial 3: recorded flops = 1.0, but FlopsProfiler gives"),
    (lambda d: d.update(trials=5), r"field 'trials' is 5 \(int\), expected a list"),
    (lambda d: d["trials"][2].pop("score"), r"trials\[2\] has no field 'score'"),
    (lambda d: d["trials"][2].update(score="0.9"), r"trials\[2\]: field 'score' is '0.9' \(str\), not a number"),
    (lambda d: d["trials"][2].update(score=float("inf")), r"field 'score' is inf, expected a finite number"),
    (lambda d: d["trials"][1].update(eval_s=-1), r"field 'eval_s' is -1.0, expected a finite number >= 0"),
    (lambda d: d["trials"][4].update(trial=7), r"field 'trial' is 7, expected 4"),
    (lambda d: d["trials"][4].update(batch=True), r"field 'batch' is True, expected an int >= 0"),
    (lambda d: d.update(num_proposed=-3), r"field 'num_proposed' is -3"),
    (lambda d: d["trials"][0]["metrics"].update(flops=None), r"field 'metrics.flops' is None"),
])
def test_a_tampered_checkpoint_is_refused_naming_file_and_field(digits, tmp_path, edit, message):
    space, ckpt, score, kw, _ = _checkpoint(digits, tmp_path)
    _edit(ckpt, edit)
    with pytest.raises(CheckpointError, match=r"checkpoint '.*c\.json'.*" + message):
        search_run(space, X, {"flops": "70%"}, score, max_trials=12, checkpoint=ckpt, **kw)


def test_binary_and_folder_checkpoints_are_clear_errors(digits, tmp_path):
    space, flops, _ = digits
    (tmp_path / "bin.json").write_bytes(bytes(range(256)))
    with pytest.raises(CheckpointError, match=r"'.*bin\.json' is not a JSON text file"):
        search_run(space, X, None, lambda s: 1.0, checkpoint=tmp_path / "bin.json", progress=False)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(CheckpointError, match=r"'.*dir\.json' is a folder"):
        search_run(space, X, None, lambda s: 1.0, checkpoint=tmp_path / "dir.json", progress=False)


def test_resume_with_fewer_max_trials_returns_that_many_and_keeps_the_file(digits, tmp_path):
    space, ckpt, score, kw, full = _checkpoint(digits, tmp_path, n=14)
    before = ckpt.read_text()
    short = search_run(space, X, {"flops": "70%"}, score, max_trials=5, checkpoint=ckpt, **kw)
    fresh = search_run(space, X, {"flops": "70%"}, score, max_trials=5, **kw)  # an uninterrupted 5-trial run
    assert len(short.history) == 5 and short.resumed_trials == 5
    assert [(t.sample, t.score) for t in short.history] == [(t.sample, t.score) for t in fresh.history]
    assert short.best_sample == fresh.best_sample
    assert ckpt.read_text() == before  # the 9 later trials are not lost


def test_a_second_search_on_a_locked_checkpoint_is_refused(digits, tmp_path):
    space, *_ = digits
    ckpt = tmp_path / "c.json"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from filelock import FileLock   # the lock hwnas.io.lock_file takes, without importing torch
        lock = FileLock({str(ckpt) + ".lock"!r}, timeout=0)
        lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=r"search checkpoint '.*c\.json' is in use by another process"):
            search_run(space, X, None, lambda s: 1.0, max_trials=3, checkpoint=ckpt, progress=False)
        with pytest.raises(FileInUseError):
            lock_file(ckpt)
    finally:
        holder.kill()
        holder.wait()
    result = search_run(space, X, None, lambda s: 1.0, max_trials=3, checkpoint=ckpt, progress=False)
    assert len(result.history) == 3  # the lock died with its process


def test_stale_temp_files_of_a_killed_write_are_removed_on_start(digits, tmp_path):
    space, *_ = digits
    ckpt = tmp_path / "c.json"
    stale = [tmp_path / ".c.json.k1ll3d.tmp", tmp_path / ".h.csv.abc.tmp"]
    for p in stale:
        p.write_text("half a fil")
    os.utime(stale[1], (1, 1))  # an old one: a CSV temp is removed only when older than a minute
    other = tmp_path / ".other.json.x.tmp"
    other.write_text("not ours")
    search_run(space, X, None, lambda s: 1.0, max_trials=3, checkpoint=ckpt, history_csv=tmp_path / "h.csv",
                     progress=False)
    assert not any(p.exists() for p in stale) and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.tmp", "c.json", "c.json.lock", "h.csv"]
    assert remove_stale_temps(tmp_path / "missing" / "x.json") == []


def test_score_func_is_never_called_twice_for_one_subnet(digits):
    space, flops, params = digits
    calls = []

    def score(sample):
        calls.append(json.dumps(space.canonical(dict(sample)), sort_keys=True))
        return params.profile(sample) / 1e4

    result = search_run(space, X, {"flops": "40%"}, score, strategy=RegularizedEvolution(4, 4, 0.02),
                              max_trials=80, seed=0, progress=False)
    assert len(calls) == len(set(calls)) < 80  # evolution proposed repeats; none was scored again
    repeats = [t for t in result.history if t.repeat_of >= 0]
    assert repeats and len(calls) + len(repeats) == 80
    for t in repeats:
        first = result.history[t.repeat_of]
        assert first.repeat_of < 0 and first.score == t.score and t.eval_s == 0.0
        assert space.canonical(dict(first.sample)) == space.canonical(dict(t.sample))


# ------------------------------------------------------------------------------------------ arch files
def test_load_arch_of_binary_folder_and_wrong_types_names_the_file(tmp_path):
    (tmp_path / "bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValueError, match=r"architecture file '.*bin' is not a JSON text file"):
        hwnas.load_arch(tmp_path / "bin")
    with pytest.raises(ValueError, match=r"architecture file '.*' is a folder"):
        hwnas.load_arch(tmp_path)
    for data, message in [([1, 2], r"should hold a JSON object .* got list"),
                          ({"hwnas_arch": 1, "sample": {"w": [8]}}, r"label 'w' has the value \[8\] \(list\)"),
                          ({"w": {"v": 8}}, r"label 'w' has the value \{'v': 8\} \(dict\)"),
                          ({"w": float("nan")}, r"label 'w' has the value nan"),
                          ({"hwnas_arch": 1}, r"got NoneType")]:
        path = tmp_path / "a.json"
        path.write_text(json.dumps(data))
        with pytest.raises(SampleError, match=r"architecture file '.*a\.json'.*" + message):
            hwnas.load_arch(path)


# -------------------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seed", [-1, "abc", True, 1.5])
def test_bad_seeds_name_seed(digits, seed):
    space, *_ = digits
    with pytest.raises(ValueError, match=r"seed must be an int >= 0 .* got " + repr(seed).replace(".", r"\.")):
        search_run(space, X, None, lambda s: 1.0, max_trials=2, seed=seed, progress=False)
    with pytest.raises(ValueError, match=r"rng must be an int >= 0"):
        space.random_sample(seed)


# -------------------------------------------------------------------------------------- constraints
def test_percentages_above_100_are_refused(digits):
    _, flops, _ = digits
    for spec in ("150%", "100.5%", "0%"):
        with pytest.raises(ConstraintError, match=r"must be in \(0%, 100%\]"):
            parse_constraints({"flops": spec}, {"flops": flops})
    (c,) = parse_constraints({"flops": "100%"}, {"flops": flops})
    assert c.bound == metric_range(flops)[2]


def test_an_absolute_bound_below_the_space_says_it_is_absolute_and_shows_the_range(digits, caplog):
    space, flops, _ = digits
    hi = metric_range(flops)[2]
    with pytest.raises(ConstraintError, match=r"flops=60 is an absolute bound \(60 FLOPs, not a percentage\).*"
                                              rf"this space's flops spans {smallest_digits_flops()} to {hi:.6g}".replace("+", r"\+")):
        parse_constraints({"flops": 60}, {"flops": flops})
    with caplog.at_level(logging.WARNING, logger="hwnas"):
        summary = hwnas.profile(space, X, constraints={"flops": 60.0}, verbose=False)
    assert not summary.constraints[0].satisfiable
    assert any("absolute bound" in r.getMessage() and f"spans {smallest_digits_flops()} to" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------- tight constraints: feasible region
@pytest.fixture(scope="module")
def mobilenet96():
    space = hwnas.spaces.create("mobilenet_v3").eval()
    x = torch.zeros(1, 3, 96, 96)
    return space, x, hwnas.FlopsProfiler(space, x)


def test_a_tight_constraint_samples_the_feasible_region(mobilenet96):
    space, x, flops = mobilenet96
    lo, _, hi = metric_range(flops)
    bound = 0.25 * hi  # the smallest subnet has 23% of the largest's FLOPs
    # the reference: uniform rejection sampling finds no feasible subnet in 100,000 draws
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(flops.model.sizes[lab], size=100_000) for lab in flops.model.labels], axis=1)
    assert lo <= bound and (flops.profile_batch(idx) <= bound).sum() == 0
    result = search_run(space, x, {"flops": "25%"}, lambda s: 1.0, strategy=Random(), max_trials=40, seed=0,
                              progress=False)
    samples = {json.dumps(t.sample, sort_keys=True) for t in result.history}
    assert len(result.history) == 40 and len(samples) > 30
    assert all(t.metrics["flops"] <= bound for t in result.history)
    subnet = hwnas.export(space, result.best_sample)
    assert fvcore_flops(subnet, x) == result.best_metrics["flops"] <= bound  # independent count


class _Table:
    """A duck-typed cost model over two binary labels, for a pair of bounds that cannot hold together."""

    def __init__(self, table):
        self.labels = ("a", "b")
        self.choices = {"a": Choice([0, 1], label="a"), "b": Choice([0, 1], label="b")}
        self.tables = [(("a", "b"), np.asarray(table, dtype=float))]
        self.const = 0.0
        self.metric = "m"

    @property
    def model(self):
        return self

    def profile(self, s):
        return float(self.tables[0][1][s["a"], s["b"]])


def test_jointly_infeasible_bounds_end_in_a_clear_error():
    up, down = _Table([[0, 1], [1, 2]]), _Table([[2, 1], [1, 0]])  # up <= 0 needs (0, 0); down <= 0 needs (1, 1)
    guard = ConstraintFilter(parse_constraints({"up": 0.5, "down": 0.5}, {"up": up, "down": down},
                                               {"up": (0, 1, 2), "down": (0, 1, 2)}), {"up": up, "down": down})
    chain = Chain(Random(), guard)
    chain.bind({"a": (0, 1), "b": (0, 1)}, 0)
    with pytest.raises(RejectionError, match=r"no sample meets these bounds together .* Loosen one"):
        chain.propose()


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_errors_are_one_line_with_exit_code_2(capsys):
    for argv, message in [(["profile", "--space", "digits", "--constraint", "flops=150%"], "must be in (0%, 100%]"),
                          (["profile", "--space", "digits", "--space-arg", "bogus=1"], "unknown keyword argument"),
                          (["profile", "--space", "digits", "--space-arg", "num_classes=-3"], "negative dimension"),
                          (["profile", "--space", "nope"], "no space named 'nope'")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hwnas {argv[0]}: error: ") and message in err and "Traceback" not in err
        assert err.count("\n") == 1
    with pytest.raises(ValueError, match="no space named"):
        main(["--debug", "profile", "--space", "nope"])
    with pytest.raises(SystemExit) as e:
        main(["profile"])
    assert e.value.code == 2


def test_cli_output_into_a_closed_pipe_ends_quietly(monkeypatch):
    read, write = os.pipe()
    os.close(read)  # the reader (`head`) is gone before anything is written
    saved = os.dup(write)
    out = os.fdopen(write, "w")
    err = tempfile.TemporaryFile("w+")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    try:
        assert main(["spaces"]) == 141
        out.write("more")  # stdout now goes to /dev/null: Python's flush at exit cannot fail again
        out.flush()
    finally:
        monkeypatch.undo()
        os.close(saved)
    err.seek(0)
    assert err.read() == ""


# --------------------------------------------------------------------------------------------- fuzz
_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="hwnas-fuzz-"))
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=8), st.sampled_from([8, 16, 24, 32, 48, 64, 2, 3, 5, "mbconv", "conv", 16.0]))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=8)


@st.composite
def _arch_files(draw):
    space_labels = ["stem.width", "s1.depth", "s1.width", "s2.width", "s1.b1.op", "s1.b1.kernel"]
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        data = draw(_JSON)
    else:
        sample = draw(st.dictionaries(st.sampled_from(space_labels) | st.text(max_size=6), _SCALARS, max_size=8))
        data = {"hwnas_arch": 1, "sample": sample} if kind == 2 else sample
    return json.dumps(data).encode()


@FUZZ
@given(_arch_files())
def test_fuzz_arch_json_ends_in_a_documented_error_or_a_valid_sample(raw):
    space, choice_objs, largest = _fuzz_space()
    path = _FUZZ_DIR / "arch.json"
    path.write_bytes(raw)
    try:
        sample = hwnas.load_arch(path)
        full = {**largest, **sample}
        validate_sample(choice_objs, full)
    except (SampleError, ValueError) as e:
        assert "arch.json" in str(e) or "label" in str(e)
        return
    for lab, v in full.items():  # a valid sample holds the choices' own values, of their own types
        assert any(type(v) is type(c) and v == c for c in choice_objs[lab].values)


_NUMBER_TEXT = st.tuples(st.sampled_from(["", " ", "-", "+", "0x", "."]),
                         st.one_of(st.floats(allow_nan=True).map(repr), st.integers(-10**30, 10**30).map(str),
                                   st.sampled_from(["", "e", "1e400", "nan", "inf", "5.", ".5", "1_0", "٣"])),
                         st.sampled_from(["", "%", " %", "%%", "% ", "e%", "percent", "%\n"])).map("".join)
_SPECS = st.one_of(st.text(max_size=12), _NUMBER_TEXT,
                   st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12), st.booleans(),
                   st.none(), st.lists(st.integers(), max_size=2))


@FUZZ
@given(st.dictionaries(st.sampled_from(["flops", "params", "latency_ms"]) | st.text(max_size=5), _SPECS, max_size=3))
def test_fuzz_constraints_end_in_a_constraint_error_or_valid_bounds(constraints):
    profs, ranges = _fuzz_profilers()
    try:
        parsed = parse_constraints(constraints, profs, ranges)
    except ConstraintError as e:
        assert str(e)
        return
    for c in parsed:
        lo, _, hi = ranges[c.metric]
        assert math.isfinite(c.bound) and lo * (1 - 1e-12) <= c.bound and c.spec == constraints[c.metric]
        if isinstance(c.spec, str):
            assert c.bound <= hi * (1 + 1e-12)


_CACHE: dict = {}


def _fuzz_space():
    if "space" not in _CACHE:
        space = hwnas.spaces.create("digits")
        _CACHE["space"] = (space, hwnas.space.collect_choices(space), space.max_sample())
    return _CACHE["space"]


def _fuzz_profilers():
    if "profs" not in _CACHE:
        space = _fuzz_space()[0]
        flops = hwnas.FlopsProfiler(space, X)
        profs = {"flops": flops, "params": hwnas.NumParamsProfiler(space, graph=flops.graph)}
        _CACHE["profs"] = (profs, {m: metric_range(p) for m, p in profs.items()})
    return _CACHE["profs"]


def test_io_reads_say_what_is_wrong(tmp_path):
    path = atomic_write_json(tmp_path / "ok.json", {"x": 1})
    assert read_json(path) == {"x": 1}
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"nests JSON too deeply"):
        read_json(tmp_path / "deep.json")
    with pytest.raises(FileNotFoundError, match=r"'.*nope\.json' does not exist"):
        read_json(tmp_path / "nope.json")


def _leaf_paths(data, prefix=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield prefix + (k,)
            yield from _leaf_paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield prefix + (i,)
            yield from _leaf_paths(v, prefix + (i,))


def _fuzz_checkpoint():
    if "ckpt" not in _CACHE:
        space = _fuzz_space()[0]
        profs, _ = _fuzz_profilers()
        score = lambda s: profs["params"].profile(s) / 1e4 - profs["flops"].profile(s) / 1e7  # noqa: E731
        kw = dict(profilers=profs, strategy=RegularizedEvolution(4, 2), max_trials=8, seed=5, progress=False)
        path = _FUZZ_DIR / "base.json"
        search_run(space, None, {"flops": "70%"}, score, checkpoint=path, **kw)
        data = json.loads(path.read_text())
        _CACHE["ckpt"] = (space, score, kw, data, list(_leaf_paths(data)))
    return _CACHE["ckpt"]


@settings(max_examples=200, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_checkpoint_edits_end_in_a_checkpoint_error_or_an_honest_resume(data):
    space, score, kw, base, paths = _fuzz_checkpoint()
    edited = json.loads(json.dumps(base))
    where = data.draw(st.sampled_from(paths))
    parent = edited
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(_JSON)
    path = _FUZZ_DIR / "edited.json"
    path.write_text(json.dumps(edited))
    try:
        result = search_run(space, None, {"flops": "70%"}, score, checkpoint=path, **kw)
    except CheckpointError as e:
        assert "edited.json" in str(e)
        return
    flops, params = kw["profilers"]["flops"], kw["profilers"]["params"]
    assert len(result.history) == 8
    for t in result.history:  # whatever was accepted: the metrics are the profilers' and meet the constraint
        assert t.metrics == {"flops": flops.profile(t.sample), "params": params.profile(t.sample)}
        assert t.metrics["flops"] <= 0.7 * metric_range(flops)[2] * (1 + 1e-12)


def test_a_damaged_history_csv_names_line_and_column(digits, tmp_path):
    space, *_ = digits
    result = search_run(space, X, None, lambda s: 1.0, max_trials=3, progress=False,
                              history_csv=tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert len(read_history_csv(tmp_path / "h.csv")) == len(result.history) == 3
    for bad, message in [(lines[2].replace(",1.0,", ",high,", 1), r"line 3: column 'score' holds 'high'"),
                         (lines[2].rsplit(",", 1)[0] + ",[1]", r"line 3: column 'sample' holds")]:
        (tmp_path / "bad.csv").write_text("\n".join([lines[0], lines[1], bad]) + "\n")
        with pytest.raises(ValueError, match=r"history CSV '.*bad\.csv', " + message):
            read_history_csv(tmp_path / "bad.csv")


def test_parallel_batches_score_each_subnet_once(digits):
    from concurrent.futures import ThreadPoolExecutor

    space, *_ = digits
    calls = []
    with ThreadPoolExecutor(4) as pool:
        result = search_run(space, X, None, lambda s: calls.append(dict(s)) or float(s["s2.width"]),
                                  strategy=Chain(Random(), lambda s: s["s1.depth"] == 1 and s["s2.depth"] == 1
                                                 and s["s1.b1.op"] == "conv" and s["s2.b1.op"] == "conv"),
                                  max_trials=40, executor=pool, seed=0, progress=False)
    keys = [json.dumps(space.canonical(dict(c)), sort_keys=True) for c in calls]
    assert len(keys) == len(set(keys)) and len(result.history) == 40
    assert {t.batch for t in result.history} == set(range(10))
    assert sum(t.repeat_of >= 0 for t in result.history) == 40 - len(calls) > 0


def test_the_feasible_sampler_only_trusts_profilers_that_are_their_tables(digits):
    from hwnas.search import FeasibleSampler

    space, flops, _ = digits

    class Scaled:  # a latency with a size term, say: profile is not the sum of the model's tables
        model, space = flops.model, flops.space

        def profile(self, s):
            return 1.5 * flops.profile(s)

    assert FeasibleSampler.build([(Scaled(), 1e6)], space.choices()) is None
    sampler = FeasibleSampler.build([(flops, 1e6)], space.choices())
    rng = np.random.default_rng(1)
    assert all(flops.profile(sampler.sample(rng)) <= 1e6 for _ in range(200))
