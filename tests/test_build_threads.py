"""A LUT built for a device with several spinning threads is measured steady end to end, not paired.

At 2 threads, sessions that take turns run by run compete with the spinning pool threads of the session that ran
last, so the paired protocol measured 1.8-2.5x the steady state (2026-12-07); the build measures such a device in
turns of consecutive runs (hwnas's definition) and needs no recalibration.
"""

import torch
from test_register_space import FAST, TinyUserSpace

from hwnas.hw import Device
from hwnas.hw.build import build_lut


def test_multi_thread_build_measures_steady(tmp_path):
    space, x = TinyUserSpace(), torch.zeros(1, 3, 16, 16)
    dev = Device("test-2t-spinning", intra_op_threads=2, allow_spinning=True)
    lut = build_lut(space, x, dev, tmp_path / "lut.json", space_name="tiny2t", **FAST)
    e2e = lut.settings["interleaved_end_to_end"]
    assert e2e["statistic"] == "steady" and lut.definition == "steady"
    assert "reference_ms" not in lut.settings  # no pairing reference was run
    rows = [r for r in lut.subnets if r.get("interleaved")]
    assert rows and all(r["end_to_end_ms"] == r["end_to_end_median_ms"] > 0 for r in rows)
    # one spinning thread has no pool: still paired (the level calibrated to steady separately)
    one = build_lut(space, x, Device("test-1t", intra_op_threads=1), tmp_path / "lut1.json", space_name="tiny1t",
                    **FAST)
    assert one.settings["interleaved_end_to_end"]["statistic"] == "paired"
