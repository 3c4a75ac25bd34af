"""How far ahead a burst is recorded (controlplane.loops.firerecording.lead_for)."""

from __future__ import annotations

import pytest

from controlplane.loops.firerecording import LEAD_MARGIN, MAX_LEAD, lead_for


def test_a_lone_fire_or_none_gets_the_configured_lead() -> None:
    assert lead_for([0.4], 0.002, 2.0) == 2.0
    assert lead_for([], 0.002, 2.0) == 2.0


def test_no_lead_stays_no_lead_however_big_the_burst() -> None:
    assert lead_for([5.0] * 10_000, 0.002, 0.0) == 0.0


def test_a_burst_at_one_instant_is_started_early_enough_to_record_it_all() -> None:
    lead = lead_for([5.0] * 2_000, 0.00135, 2.0)
    assert lead == pytest.approx(2_000 * 0.00135 * LEAD_MARGIN)  # about 4 s
    assert lead_for([5.0] * 500, 0.00135, 2.0) == 2.0  # 1 s of recording: the lead covers it


def test_fires_spread_wider_than_their_recording_need_no_more() -> None:
    spread = [i * 0.005 for i in range(2_000)]  # one every 5 ms, each recorded in 3 ms
    assert lead_for(spread, 0.002, 2.0) == 2.0


def test_what_matters_is_the_fires_behind_the_first() -> None:
    # 1,000 due together 10 s after a lone fire: recording them takes 3 s, which must start 3 s
    # before they are due, i.e. 7 s after the lone fire; the lone fire alone needs no more.
    assert lead_for([0.0] + [10.0] * 1_000, 0.002, 2.0) == 2.0
    # The same 1,000 only 1 s after it: recording must start 2 s before the lone fire.
    assert lead_for([0.0] + [1.0] * 1_000, 0.002, 2.0) == pytest.approx(
        1_001 * 0.002 * LEAD_MARGIN - 1.0
    )


def test_the_lead_never_passes_its_bound() -> None:
    assert lead_for([1.0] * 100_000, 0.002, 2.0) == MAX_LEAD
