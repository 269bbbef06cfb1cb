"""DARTS (first order; --order 2 for the unrolled gradient) on digits with an expected-latency penalty.

    python examples/darts.py [--epochs 2] [--order 1]
"""

import time

from _digits import parse, report, setup

from hwnas.search import DARTS, ExpectationProfilerPenalty, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    args = parse(__doc__, epochs=2)
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = DARTS(ExpectationProfilerPenalty(lat, "50%", scale=2.0, nonlinear="positive"), filter=flt,
                     arch_lr=0.05)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, lr=0.08, seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
