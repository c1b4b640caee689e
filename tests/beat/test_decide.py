"""The verdict on a claimed slot, rule by rule, without servers."""

from __future__ import annotations

import pytest

from celery_singleton_beat.core.decide import SlotView, Verdict, decide

SLOT = 1_000_000
GRACE = 300.0


def verdict(
    late_s: float, *, newest: bool = True, resumed: bool = False, misfire: str = "coalesce",
    last: int = SLOT - 60_000,
) -> Verdict:  # fmt: skip
    return decide(
        SlotView(SLOT, newest, resumed), last, SLOT + round(late_s * 1000), misfire, GRACE
    )


@pytest.mark.parametrize("misfire", ["coalesce", "skip"])
def test_a_slot_handled_within_a_second_of_its_time_fires_under_either_policy(
    misfire: str,
) -> None:
    assert verdict(0, misfire=misfire) is Verdict.FIRE
    assert verdict(1.0, misfire=misfire) is Verdict.FIRE
    assert verdict(1.0, newest=False, misfire=misfire) is Verdict.FIRE


def test_coalesce_fires_the_newest_late_slot_up_to_the_grace_and_skips_it_after() -> None:
    assert verdict(1.001) is Verdict.FIRE
    assert verdict(GRACE) is Verdict.FIRE
    assert verdict(GRACE + 0.001) is Verdict.SKIP


def test_skip_policy_skips_a_late_newest_slot() -> None:
    assert verdict(1.001, misfire="skip") is Verdict.SKIP


def test_an_older_slot_that_passed_unclaimed_is_skipped_once_late() -> None:
    assert verdict(1.001, newest=False) is Verdict.SKIP
    assert verdict(5, newest=False, misfire="skip") is Verdict.SKIP


@pytest.mark.parametrize("misfire", ["coalesce", "skip"])
def test_a_resumed_slot_is_sent_again_within_the_grace_whatever_the_policy(
    misfire: str,
) -> None:
    assert verdict(3, newest=False, resumed=True, misfire=misfire) is Verdict.FIRE
    assert verdict(GRACE, newest=False, resumed=True, misfire=misfire) is Verdict.FIRE
    assert verdict(GRACE + 1, resumed=True, misfire=misfire) is Verdict.SKIP


def test_a_late_newest_slot_is_not_coalesced_once_a_newer_slot_was_handled() -> None:
    assert verdict(5, last=SLOT + 1) is Verdict.SKIP
    assert verdict(5, last=SLOT) is Verdict.SKIP
    assert verdict(5, last=SLOT - 1) is Verdict.FIRE


def test_a_resumed_slot_is_sent_again_even_after_newer_slots_were_handled() -> None:
    """It may have been sent before its claim expired: it is never counted as missed."""
    assert verdict(5, newest=False, resumed=True, last=SLOT + 10_000) is Verdict.FIRE


def test_an_on_time_slot_fires_even_when_a_newer_one_was_handled() -> None:
    assert verdict(0.5, newest=False, last=SLOT + 500) is Verdict.FIRE


def test_a_slot_in_the_future_fires_when_claimed_early() -> None:
    """Clock at the edge: a replica whose clock runs ahead may claim a slot early."""
    assert verdict(-0.5) is Verdict.FIRE
