"""GDAS (hard Gumbel-softmax, one path per step) on digits; --soft gives FBNet's soft Gumbel mixture.

    python examples/gdas.py [--epochs 5] [--soft]
"""

import sys
import time

from _digits import parse, report, setup

from hwnas.search import ExpectationProfilerPenalty, GumbelDARTS, TemperatureSchedule, train_oneshot

if __name__ == "__main__":
    start = time.perf_counter()
    soft = "--soft" in sys.argv
    if soft:
        sys.argv.remove("--soft")
    args = parse(__doc__, epochs=2 if soft else 5)
    space, train, val, test, lat, flt, limit = setup(args.seed, args.budget)
    strategy = GumbelDARTS(ExpectationProfilerPenalty(lat, "50%", scale=2.0, nonlinear="positive"), filter=flt,
                           temperature=TemperatureSchedule(5.0, 0.5, args.epochs), hard=not soft, arch_lr=0.05)
    result = train_oneshot(space, strategy, train, val, epochs=args.epochs, lr=0.08, seed=args.seed)
    report(result, train, test, limit, args.finetune_epochs, start)
