"""`pipeline demo`'s remaining-time estimate (pipeline/commands/demo.py `Remaining`)."""
from __future__ import annotations

from pipeline.commands.demo import STAGE_SECONDS, Remaining
from pipeline.registry import pipeline_stages


def test_every_demo_stage_has_a_reference_time():
    assert [st.name for st in pipeline_stages()] == list(STAGE_SECONDS)


def test_the_estimate_scales_the_reference_by_this_machines_speed_and_ignores_skipped_stages():
    eta = Remaining(list(STAGE_SECONDS))
    assert eta.left() == sum(STAGE_SECONDS.values())  # nothing measured yet: the reference machine's time
    eta.done("manifest", 2 * STAGE_SECONDS["manifest"], skipped=False)  # this machine runs at half the speed
    rest = sum(STAGE_SECONDS.values()) - STAGE_SECONDS["manifest"]
    assert eta.left() == 2 * rest
    eta.done("detect", 0.1, skipped=True)  # up to date: says nothing of speed, and is no longer to come
    assert eta.left() == 2 * (rest - STAGE_SECONDS["detect"])
    for name in ("resample", "extract", "train-head", "evaluate"):
        eta.done(name, 1.0, skipped=False)
    assert eta.left() == 0 and not eta.pending
