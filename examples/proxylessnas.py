"""ProxylessNAS on digits: one sampled path per weight step, binary gates and the LUT's expected latency.

    python examples/proxylessnas.py [--epochs 4] [--uniform]
"""

import sys
import time

from _digits import parse, report, setup

from hwnas.search import ExpectationProfilerPenalty, ProxylessNAS, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    uniform = "--uniform" in sys.argv
    if uniform:
        sys.argv.remove("--uniform")
    args = parse(__doc__, epochs=4)
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = ProxylessNAS(ExpectationProfilerPenalty(lat, "50%", scale=2.0, nonlinear="positive"), filter=flt,
                            uniform=uniform, arch_lr=0.05)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, lr=0.08, seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
