"""ENAS on digits: an LSTM controller (REINFORCE) with the sampled subnet's LUT latency as a penalty.

    python examples/enas.py [--epochs 5]
"""

import time

from _digits import parse, report, setup

from hwnas.search import ENAS, SampleProfilerPenalty, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    args = parse(__doc__, epochs=5)
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = ENAS(SampleProfilerPenalty(lat, "50%", scale=2.0, nonlinear="positive"), filter=flt)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, lr=0.08, seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
