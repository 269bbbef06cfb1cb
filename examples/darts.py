"""DARTS (first order; --order2 for the unrolled gradient) on digits with an expected-latency penalty.

    python examples/darts.py [--epochs 1] [--order2]
"""

import time

from _digits import PENALTY_AT, parse, report, setup

from hwnas.search import DARTS, ExpectationProfilerPenalty, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    args = parse(__doc__, epochs=1, warmup=0, flags=("order2",))
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = DARTS(ExpectationProfilerPenalty(lat, PENALTY_AT, scale=2.0, nonlinear="positive"), filter=flt,
                     order=2 if args.order2 else 1, arch_lr=0.05, derive_samples=8)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, warmup_epochs=args.warmup, lr=0.08,
                           seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
