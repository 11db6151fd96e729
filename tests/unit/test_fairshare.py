"""Fair share: decayed usage, the fair-share factor and the multifactor priority (pure)."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.fairshare import (
    HALF_LIFE_S,
    Usage,
    UsageRecord,
    Weights,
    advance,
    decayed_gpu_seconds,
    fairshare_factor,
    fold_usage,
    job_priority,
    multifactor_order,
    user_factor,
)
from overlay.model import JobSpec
from overlay.queueing import QueuedJob

T0 = datetime(2026, 1, 1)
DAY = timedelta(days=1)
HOUR = 3600.0


def record(account: str = "vision", user: str = "alice", *, gpus: int = 1, start: float = 0.0,
           end: float | None = 3600.0) -> UsageRecord:
    return UsageRecord(account=account, user=user, gpus=gpus, start=T0 + timedelta(seconds=start),
                       end=None if end is None else T0 + timedelta(seconds=end))


def usage(**accounts: float) -> Usage:
    return Usage(at=T0, accounts=accounts, users={(a, "alice"): v for a, v in accounts.items()})


def queued(job_id: str, *, account: str = "default", user: str = "default", priority: int = 0,
           at: datetime = T0) -> QueuedJob:
    return QueuedJob(spec=JobSpec(job_id=job_id, cmd=("true",), gpus=1, priority=priority,
                                  account=account, user=user), enqueued_at=at)


# -- usage ---------------------------------------------------------------------------------------

def test_usage_halves_after_one_half_life():
    # Given an hour of two GPUs, finished
    records = [record(gpus=2)]
    end = T0 + timedelta(hours=1)
    # When it is folded at its end and again one half-life later
    fresh = fold_usage(records, now=end, half_life_s=HALF_LIFE_S)
    later = fold_usage(records, now=end + timedelta(seconds=HALF_LIFE_S), half_life_s=HALF_LIFE_S)
    # Then the later usage is half, for the account and the user
    assert later.accounts["vision"] == pytest.approx(fresh.accounts["vision"] / 2)
    assert later.users["vision", "alice"] == pytest.approx(fresh.users["vision", "alice"] / 2)


def test_fresh_usage_is_nearly_the_plain_gpu_seconds_and_never_more():
    used = decayed_gpu_seconds(4, since_s=HOUR, until_s=0.0, half_life_s=HALF_LIFE_S)
    assert used == pytest.approx(4 * HOUR, rel=0.005)  # an hour of a week decays ~0.2%
    assert used < 4 * HOUR


def test_without_decay_usage_is_gpus_times_seconds():
    assert decayed_gpu_seconds(3, since_s=100.0, until_s=40.0, half_life_s=math.inf) == 180.0


def test_a_running_record_counts_up_to_now_and_nothing_after_now_counts():
    now = T0 + timedelta(seconds=1800)
    running = fold_usage([record(end=None)], now=now, half_life_s=math.inf)
    clipped = fold_usage([record(end=7200.0), record(start=5000.0, end=6000.0)], now=now,
                         half_life_s=math.inf)
    assert running.accounts["vision"] == clipped.accounts["vision"] == 1800.0


@given(st.lists(st.tuples(st.integers(1, 8), st.floats(0, 1e6), st.floats(0, 1e6)), max_size=8),
       st.floats(60.0, 1e7))
def test_advancing_usage_event_by_event_equals_folding_the_records_at_once(spans, half_life):
    # Given jobs of one user, each held from a to b; the scheduler advances usage at each
    # start and end, with the GPUs held in between
    spans = [(g, min(a, b), max(a, b)) for g, a, b in spans]
    moments = sorted({0.0, 2e6, *(a for _, a, _ in spans), *(b for _, _, b in spans)})
    tally = Usage(at=T0)
    for before, after in itertools.pairwise(moments):
        held = sum(g for g, a, b in spans if a <= before and b >= after)
        tally = advance(tally, now=T0 + timedelta(seconds=after),
                        running={("vision", "alice"): held} if held else {}, half_life_s=half_life)
    # Then it matches the closed form of the whole records
    folded = fold_usage([record(gpus=g, start=a, end=b) for g, a, b in spans],
                        now=T0 + timedelta(seconds=2e6), half_life_s=half_life)
    assert tally.total == pytest.approx(folded.total, rel=1e-6, abs=1e-6)


def test_usage_cannot_be_advanced_into_the_past():
    with pytest.raises(ValueError, match="back in time"):
        advance(Usage(at=T0), now=T0 - DAY, running={})


def test_a_half_life_must_be_positive():
    with pytest.raises(ValueError, match="half-life"):
        fold_usage([record()], now=T0 + DAY, half_life_s=0)
    with pytest.raises(ValueError, match="half-life"):
        advance(Usage(at=T0), now=T0 + DAY, running={}, half_life_s=-1)


# -- the factor ------------------------------------------------------------------------------------

def test_usage_equal_to_share_gives_a_factor_of_one_half():
    # 60/40 shares, used 60/40
    book = usage(vision=600.0, nlp=400.0)
    shares = {"vision": 60, "nlp": 40}
    assert fairshare_factor(book, shares, account="vision") == pytest.approx(0.5)
    assert fairshare_factor(book, shares, account="nlp") == pytest.approx(0.5)


def test_more_usage_gives_a_lower_factor():
    shares = {"vision": 1, "nlp": 1}
    factors = [fairshare_factor(usage(vision=used, nlp=100.0), shares, account="vision")
               for used in (0.0, 50.0, 100.0, 200.0, 800.0)]
    assert factors[0] == 1.0
    assert factors == sorted(factors, reverse=True) and len(set(factors)) == len(factors)


def test_an_account_without_a_share_drops_to_zero_once_it_uses_anything():
    book = usage(vision=100.0, rogue=1.0)
    assert fairshare_factor(book, {"vision": 1}, account="rogue") == 0.0
    assert fairshare_factor(usage(vision=100.0), {"vision": 1}, account="rogue") == 1.0


def test_with_no_shares_configured_accounts_count_as_equal():
    book = usage(vision=300.0, nlp=100.0)
    assert fairshare_factor(book, {}, account="vision") == pytest.approx(2 ** -1.5)
    assert fairshare_factor(book, {}, account="nlp") == pytest.approx(2 ** -0.5)


def test_users_are_ordered_within_their_account_and_the_account_factor_is_theirs_alike():
    # Given an account at its share, used 3:1 by two users, and an account of one user
    book = Usage(at=T0, accounts={"vision": 400.0, "nlp": 400.0},
                 users={("vision", "alice"): 300.0, ("vision", "bob"): 100.0, ("nlp", "carol"): 400.0})
    # Then vision's factor is its share's 0.5 for both users; within it alice (1.5 times her
    # equal part) ranks below bob (0.5 times it); carol used exactly her part
    assert fairshare_factor(book, {"vision": 1, "nlp": 1}, account="vision") == pytest.approx(0.5)
    assert user_factor(book, account="vision", user="alice") == pytest.approx(2 ** -1.5)
    assert user_factor(book, account="vision", user="bob") == pytest.approx(2 ** -0.5)
    assert user_factor(book, account="nlp", user="carol") == pytest.approx(0.5)
    assert user_factor(book, account="vision", user="dave") == 1.0  # a new user: nothing used yet


def test_a_user_or_account_without_gpu_seconds_does_not_count_among_those_that_used_some():
    # Given a CPU-only job's record next to alice's hour of one GPU
    now = T0 + timedelta(hours=1)
    book = fold_usage([record(user="alice"), record(user="bob", gpus=0), record(account="idle", gpus=0)],
                      now=now, half_life_s=math.inf)
    # Then alice used all of vision's part: her factor is vision's own 0.5, not that of one of two
    assert user_factor(book, account="vision", user="alice") == 0.5
    assert fairshare_factor(book, {}, account="vision") == 0.5


# -- the priority ------------------------------------------------------------------------------------

def test_a_priority_is_the_sum_of_its_weighted_parts():
    weights = Weights(priority=10, age=100, fairshare=1000, user=10, max_age_s=DAY.total_seconds())
    spec = JobSpec(job_id="j", cmd=("true",), priority=3, account="vision", user="alice")
    p = job_priority(spec, T0, now=T0 + DAY / 2, usage=usage(vision=1.0, nlp=1.0),
                     shares={"vision": 1, "nlp": 1}, weights=weights)
    assert (p.priority, p.age, p.age_factor) == (30, 50, 0.5)
    assert p.fairshare_factor == pytest.approx(0.5) and p.fairshare == pytest.approx(500)
    assert p.user_factor == pytest.approx(0.5) and p.user == pytest.approx(5)
    assert p.value == pytest.approx(585)


def test_age_counts_up_to_the_maximum_age_and_no_further():
    spec = JobSpec(job_id="j", cmd=("true",))
    weights = Weights(max_age_s=DAY.total_seconds())
    older = [job_priority(spec, T0, now=T0 + k * DAY / 2, usage=Usage(at=T0), shares={}, weights=weights)
             for k in range(4)]
    assert [p.age_factor for p in older] == [0.0, 0.5, 1.0, 1.0]


def test_the_order_puts_the_account_furthest_below_its_share_first_then_priority_then_age():
    # Given vision over its share, nlp under it
    order = multifactor_order(now=T0 + DAY, usage=usage(vision=900.0, nlp=100.0),
                              shares={"vision": 1, "nlp": 1})
    jobs = [queued("v-old", account="vision", at=T0), queued("n-new", account="nlp", at=T0 + DAY),
            queued("n-old", account="nlp", at=T0), queued("v-urgent", account="vision", priority=100)]
    # Then nlp's jobs go first (older first), and a large enough own priority beats fair share
    assert [j.spec.job_id for j in order(jobs)] == ["v-urgent", "n-old", "n-new", "v-old"]


def test_with_equal_factors_the_order_is_todays_priority_then_age():
    order = multifactor_order(now=T0, usage=Usage(at=T0), shares={}, weights=Weights(age=0))
    jobs = [queued("b", at=T0 - DAY), queued("a", at=T0), queued("c", priority=1, at=T0)]
    assert [j.spec.job_id for j in order(jobs)] == ["c", "b", "a"]


@given(st.lists(st.tuples(st.sampled_from(["vision", "nlp", "speech"]), st.sampled_from(["a", "b"]),
                          st.integers(-3, 3), st.integers(0, 20)), min_size=1, max_size=12),
       st.dictionaries(st.sampled_from(["vision", "nlp", "speech"]), st.floats(0, 1e4), max_size=3))
def test_the_order_is_by_the_priority_job_priority_reports(jobs, used):
    # Given jobs of several accounts, users, priorities and ages, and some usage
    book = Usage(at=T0, accounts=used, users={(a, "a"): v for a, v in used.items()})
    shares = {"vision": 5, "nlp": 3, "speech": 2}
    now = T0 + 30 * DAY
    queue = [queued(f"j{i}", account=a, user=u, priority=p, at=T0 + k * DAY)
             for i, (a, u, p, k) in enumerate(jobs)]
    # When the multifactor order sorts them
    ordered = multifactor_order(now=now, usage=book, shares=shares)(queue)
    # Then each job's reported priority never rises along the order
    values = [job_priority(j.spec, j.enqueued_at, now=now, usage=book, shares=shares).value for j in ordered]
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(values))
