"""ENAS on digits: an LSTM controller (REINFORCE) with the sampled subnet's LUT latency as a penalty.

    python examples/enas.py [--epochs 3] [--warmup 1]
"""

import time

from _digits import PENALTY_AT, parse, report, setup

from hwnas.search import ENAS, SampleProfilerPenalty, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    args = parse(__doc__)
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = ENAS(SampleProfilerPenalty(lat, PENALTY_AT, scale=2.0, nonlinear="positive"), filter=flt,
                    derive_samples=8)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, warmup_epochs=args.warmup, lr=0.08,
                           seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
