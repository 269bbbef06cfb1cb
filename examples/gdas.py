"""GDAS (hard Gumbel-softmax, one path per step) on digits; --soft gives FBNet's soft Gumbel mixture.

    python examples/gdas.py [--epochs 3] [--warmup 1] [--soft]

--soft computes every value in every step, as DARTS does: give it --epochs 1 to stay as quick.
"""

import time

from _digits import PENALTY_AT, parse, report, setup

from hwnas.search import ExpectationProfilerPenalty, GumbelDARTS, TemperatureSchedule, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    args = parse(__doc__, flags=("soft",))
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = GumbelDARTS(ExpectationProfilerPenalty(lat, PENALTY_AT, scale=2.0, nonlinear="positive"), filter=flt,
                           temperature=TemperatureSchedule(5.0, 0.5, args.epochs), hard=not args.soft, arch_lr=0.05,
                           derive_samples=8)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, warmup_epochs=args.warmup, lr=0.08,
                           seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
