"""SPOS on digits: uniform single-path training, then evolution scoring -penalty(val_loss) by LUT latency.

    python examples/spos.py [--epochs 3]
"""

import time

from _digits import PENALTY_AT, parse, report, setup

from hwnas.search import RandomOneShot, SampleProfilerPenalty, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    args = parse(__doc__, warmup=0)
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = RandomOneShot(SampleProfilerPenalty(lat, PENALTY_AT, scale=2.0, nonlinear="positive"), filter=flt,
                             search_trials=24)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, lr=0.08, seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
