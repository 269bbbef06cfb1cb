"""ProxylessNAS on digits: one sampled path per weight step, binary gates and the LUT's expected latency.

    python examples/proxylessnas.py [--epochs 3] [--warmup 1] [--uniform]
"""

import time

from _digits import PENALTY_AT, parse, report, setup

from hwnas.search import ExpectationProfilerPenalty, ProxylessNAS, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    args = parse(__doc__, flags=("uniform",))
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = ProxylessNAS(ExpectationProfilerPenalty(lat, PENALTY_AT, scale=2.0, nonlinear="positive"), filter=flt,
                            uniform=args.uniform, arch_lr=0.01, derive_samples=8)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, warmup_epochs=args.warmup, lr=0.08,
                           seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
