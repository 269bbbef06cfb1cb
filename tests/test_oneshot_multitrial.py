"""Non-aging evolution, the REINFORCE policy strategy, and progressive shrinking."""

from __future__ import annotations

import torch

import hwnas
from hwnas.search import Chain, Evolution, Filter, PolicyBasedRL, SupernetTrainer, TensorBatches
from hwnas.search.oneshot_progressive import progressive_phases


def test_evolution_keeps_the_best_not_the_youngest():
    evo = Evolution(population_size=3, sample_size=2)
    evo.bind({"a": tuple(range(10))}, seed=0)
    for score in (5.0, 1.0, 9.0, 0.0, 7.0, 2.0):
        evo.propose()
        evo.tell({"a": int(score)}, score)
    assert sorted(s for _, s in evo.population_) == [5.0, 7.0, 9.0]


def test_policy_learns_the_rewarded_values_and_respects_filters():
    choices = {"a": (0, 1, 2, 3), "b": (0, 1, 2)}
    strat = Chain(PolicyBasedRL(batch_size=4, lr=0.1), Filter(lambda s: s["b"] != 0, metric_for_invalid=-1.0))
    strat.bind(choices, seed=0)
    for _ in range(160):
        s = strat.propose()
        assert s["b"] != 0
        strat.tell(s, float(s["a"] == 3) + float(s["b"] == 2))
    late = [strat.propose() for _ in range(40)]
    assert sum(s["a"] == 3 for s in late) > 40 / 4 * 2  # well above chance (1/4)
    assert strat.strategy.updates_ > 30


def test_policy_search_resumes_from_its_checkpoint_exactly(tmp_path):
    space = hwnas.spaces.create("digits")
    x = torch.zeros(1, 1, 8, 8)

    def score(s):
        return s["s2.width"] / 64 - s["stem.width"] / 24

    kwargs = dict(strategy=PolicyBasedRL(batch_size=3), seed=1, progress=False)
    fresh = hwnas.search(space, x, {"flops": "60%"}, score, max_trials=8, **kwargs)
    ckpt = tmp_path / "c.json"
    hwnas.search(space, x, {"flops": "60%"}, score, max_trials=4, checkpoint=ckpt, **kwargs)
    resumed = hwnas.search(space, x, {"flops": "60%"}, score, max_trials=8, checkpoint=ckpt, **kwargs)
    assert [t.sample for t in resumed.history] == [t.sample for t in fresh.history]


def test_progressive_shrinking_unlocks_kernel_then_depth_then_width():
    torch.manual_seed(0)
    space = hwnas.spaces.create("digits")
    kernel, depth, width = progressive_phases(space)
    assert all(lab.endswith(".kernel") for lab in kernel) and all(lab.endswith(".depth") for lab in depth)
    trainer = SupernetTrainer(space, sampling="progressive", num_random=3, seed=0)
    largest = space.max_sample()
    seen = []
    for phase in range(4):
        trainer.phase_ = phase
        changed = set()
        for _ in range(30):
            for s in trainer.subnets_for_step()[1:]:
                changed |= {lab for lab in s if s[lab] != largest[lab]}
        seen.append(changed)
    assert seen[0] == set()
    assert seen[1] == set(kernel)
    assert seen[2] == set(kernel) | set(depth)
    assert seen[3] == set(kernel) | set(depth) | set(width)
    data = TensorBatches(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)), batch_size=16)
    trainer.fit(data, epochs=4, progress=False)
    assert trainer.phase_ == 3 and len(trainer.losses_) == 4
