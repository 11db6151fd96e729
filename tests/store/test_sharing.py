"""Sharing a cluster, store tier: account quotas make jobs wait or borrow, fair share orders
the queue by recorded usage, every attempt's GPU-seconds are recorded as its GPUs are
released, and tokens are kept only as hashes. Real Postgres, no processes, a fixed clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from overlay.fairshare import fold_usage
from overlay.identity import Caller
from overlay.states import JobState
from overlay.store import accounts, sharing, usage
from overlay.store import jobs as job_store
from overlay.store.tables import AttemptUsageRow
from tests.store.world import H100, T0, Cluster, seconds
from workers.scheduler import schedule_pass

HOUR = 3600.0


@pytest.fixture
def teams(cluster: Cluster) -> Cluster:
    """Two accounts with quotas and shares and three users: alice and bob in vision (quota 2
    GPUs, share 2), carol in nlp (quota 2, share 1); bob coordinates vision."""
    with cluster.sessions.begin() as s:
        accounts.add_account(s, "vision", share=2, quota_gpus=2, now=T0)
        accounts.add_account(s, "nlp", share=1, quota_gpus=2, now=T0)
        accounts.add_user(s, "alice", accounts=["vision"], now=T0)
        accounts.add_user(s, "bob", accounts=["vision"], coordinates=["vision"], now=T0)
        accounts.add_user(s, "carol", accounts=["nlp"], now=T0)
    return cluster


def run(cluster: Cluster, job_id: str, *, on: str, indices: tuple[int, ...], at=T0, **spec) -> None:
    """A job of ``len(indices)`` GPUs submitted, placed on them and started at ``at``."""
    cluster.submit(job_id, at=at, gpus=len(indices), **spec)
    cluster.place(job_id, on=on, gpus=indices, at=at)
    cluster.start(job_id, at=at)


def end(cluster: Cluster, job_id: str, *, at, state: JobState = JobState.DONE) -> None:
    with cluster.sessions.begin() as s:
        job_store.transition(s, job_id, state, now=at, reason="test")


def test_a_job_over_its_accounts_quota_waits_naming_the_quota_when_the_idle_gpus_are_owed(teams, settings):
    # Given a 4-GPU node where vision holds its 2 GPUs and nlp's quota of 2 is not in use
    teams.node("n1", gpus=4)
    for i in (0, 1):
        run(teams, f"v{i}", on="n1", indices=(i,), account="vision", user="alice")
    teams.submit("v2", gpus=1, account="vision", user="alice", at=T0 + seconds(1))
    # When a pass runs
    assert schedule_pass(teams.sessions, settings, now=T0 + seconds(2)).runs == []
    # Then vision's third job waits: the 2 idle GPUs are nlp's guaranteed quota
    job = teams.job("v2")
    assert job.state is JobState.QUEUED
    assert job.reason == "account vision at its quota: 2 of 2 GPUs"


def test_a_job_over_quota_borrows_idle_gpus_beyond_every_accounts_guarantee_and_is_marked(teams, settings):
    # Given a 6-GPU node: vision holds 2 (its quota), nlp's 2 are owed, 2 more are idle
    teams.node("n1", gpus=6)
    for i in (0, 1):
        run(teams, f"v{i}", on="n1", indices=(i,), account="vision", user="alice")
    teams.submit("v2", gpus=1, account="vision", user="bob", at=T0 + seconds(1))
    teams.submit("c0", gpus=1, account="nlp", user="carol", at=T0 + seconds(1))
    # When a pass runs
    placed = {m.job_id for m in schedule_pass(teams.sessions, settings, now=T0 + seconds(2)).runs}
    # Then both run: carol's within nlp's quota, bob's borrowed beyond vision's
    assert placed == {"v2", "c0"}
    assert teams.job("v2").borrowed is True
    assert teams.job("c0").borrowed is False
    # And a GPU holder is shown by user and account
    with teams.sessions() as s:
        from overlay.store.sharing import gpu_owners
        assert set(gpu_owners(s).values()) == {("alice", "vision"), ("bob", "vision"), ("carol", "nlp")}


def test_after_usage_the_account_below_its_share_goes_first(teams, settings):
    # Given vision used 2 GPUs for an hour yesterday, and nlp nothing
    teams.node("n1", gpus=2, model=H100)
    day = T0 - timedelta(days=1)
    run(teams, "old", on="n1", indices=(0, 1), at=day, account="vision", user="alice")
    end(teams, "old", at=day + seconds(HOUR))
    # And both accounts queue a job, vision's first and with a higher priority of its own
    teams.submit("vision-job", gpus=2, account="vision", user="alice", priority=5, at=T0)
    teams.submit("nlp-job", gpus=2, account="nlp", user="carol", at=T0 + seconds(30))
    # When a pass has room for one
    placed = [m.job_id for m in schedule_pass(teams.sessions, settings, now=T0 + seconds(60)).runs]
    # Then nlp's job goes first: fair share outweighs 5 points of priority and 30 s of age
    assert placed == ["nlp-job"]


def test_each_attempt_records_gpu_seconds_and_the_report_sums_them(teams, settings):
    # Given attempts that end done, failed, and given up by a lost node (requeued), on 2 models
    teams.node("a", gpus=4)
    teams.node("h", gpus=2, model=H100)
    run(teams, "j1", on="a", indices=(0, 1), at=T0, account="vision", user="alice")
    end(teams, "j1", at=T0 + seconds(HOUR))
    run(teams, "j2", on="h", indices=(0,), at=T0, account="nlp", user="carol", max_retries=1)
    end(teams, "j2", at=T0 + seconds(600), state=JobState.QUEUED)  # retried: the attempt still counts
    teams.place("j2", on="h", gpus=(1,), at=T0 + seconds(700))
    teams.start("j2", at=T0 + seconds(700))
    end(teams, "j2", at=T0 + seconds(1000), state=JobState.FAILED)
    with teams.sessions() as s:
        rows = s.scalars(select(AttemptUsageRow).order_by(AttemptUsageRow.job_id,
                                                          AttemptUsageRow.attempt)).all()
        recorded = [(r.job_id, r.attempt, r.user_name, r.account, r.node, r.gpus, r.gpu_seconds)
                    for r in rows]
        # Then each attempt is recorded with its user, account, node and GPUs
        assert recorded == [("j1", 1, "alice", "vision", "a", 2, 2 * HOUR),
                            ("j2", 1, "carol", "nlp", "h", 1, 600.0),
                            ("j2", 2, "carol", "nlp", "h", 1, 300.0)]
        assert {r.gpu_model for r in rows if r.node == "h"} == {"NVIDIA H100 80GB HBM3"}
        # And the report's sums are the attempts'
        by_account = {r.group: (r.gpu_seconds, r.attempts) for r in usage.report(s, group_by="account")}
        assert by_account == {"vision": (2 * HOUR, 1), "nlp": (900.0, 2)}
        by_user = {r.group: r.gpu_hours for r in usage.report(s, group_by="user")}
        assert by_user == {"alice": 2.0, "carol": 0.25}
        by_model = {r.group: r.gpu_seconds for r in usage.report(s, group_by="gpu_model")}
        assert by_model == {"NVIDIA A100-SXM4-80GB": 2 * HOUR, "NVIDIA H100 80GB HBM3": 900.0}
        # And a period counts only the part of each attempt inside it
        part = {r.group: r.gpu_seconds for r in usage.report(s, group_by="account", since=T0 + seconds(300),
                                                              until=T0 + seconds(HOUR / 2))}
        assert part == {"vision": 2 * 1500.0, "nlp": 300.0 + 300.0}
        assert usage.report(s, group_by="account", since=T0 + seconds(2 * HOUR)) == []
        # And the running totals (the Prometheus counter's source) agree
        assert usage.totals(s) == [("nlp", "carol", 900.0), ("vision", "alice", 2 * HOUR)]


def test_a_job_list_shows_a_user_their_own_jobs_and_a_coordinator_their_accounts(teams):
    teams.submit("a1", account="vision", user="alice")
    teams.submit("b1", account="vision", user="bob")
    teams.submit("c1", account="nlp", user="carol")
    alice = Caller(user="alice", default_account="vision", accounts=frozenset({"vision"}))
    bob = Caller(user="bob", default_account="vision", accounts=frozenset({"vision"}),
                 coordinates=frozenset({"vision"}))
    with teams.sessions() as s:
        def listed(owner: Caller) -> tuple[set[str], int]:
            jobs, total = job_store.list_jobs(s, state=None, limit=10, offset=0, owner=owner)
            return {j.job_id for j in jobs}, total
        assert listed(alice) == ({"a1"}, 1)
        assert listed(bob) == ({"a1", "b1"}, 2)


def test_tokens_are_stored_only_as_hashes_and_a_revoked_one_is_refused(teams):
    with teams.sessions.begin() as s:
        key, token = accounts.create_token(s, "alice")
    with teams.sessions() as s:
        # Then no column of any token row holds the token or its secret (all after the key:
        # token_urlsafe may put "_" in it, so split twice only)
        secret = token.split("_", 2)[2]
        assert len(secret) >= 40
        dump = s.execute(text("select api_tokens::text from api_tokens")).scalars().all()
        assert dump and all(token not in row and secret not in row for row in dump)
        caller = accounts.caller_for_token(s, token)
        assert caller is not None and caller.user == "alice" and caller.accounts == {"vision"}
        # And a token that differs in its secret is not alice
        assert accounts.caller_for_token(s, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    with teams.sessions.begin() as s:
        accounts.revoke_token(s, key)
    with teams.sessions() as s:
        assert accounts.caller_for_token(s, token) is None
        assert not accounts.any_live_token(s)


def test_the_decayed_usage_summed_in_postgres_is_what_fold_usage_counts(teams):
    # Given attempts that ended over the last weeks, one that started before the window,
    # and one still running
    teams.node("n1", gpus=4)
    for i, (days, hours, account, user) in enumerate([(1, 2, "vision", "alice"), (9, 5, "vision", "bob"),
                                                      (20, 1, "nlp", "carol"), (0.5, 0.25, "nlp", "carol")]):
        start = T0 - timedelta(days=days)
        run(teams, f"j{i}", on="n1", indices=(i,), at=start, account=account, user=user)
        end(teams, f"j{i}", at=start + timedelta(hours=hours))
    run(teams, "live", on="n1", indices=(0, 1), at=T0 - timedelta(hours=3), account="vision", user="alice")
    half_life = 3 * 86400.0
    with teams.sessions() as s:
        # When fair share reads the usage
        summed = sharing.decayed_usage(s, now=T0, half_life_s=half_life)
        records = usage.ended_records(s, now=T0, horizon=timedelta(days=365)) + usage.holding_records(s)
    # Then it is what folding every record in Python gives
    folded = fold_usage(records, now=T0, half_life_s=half_life)
    assert summed.users.keys() == folded.users.keys()
    for key, value in folded.users.items():
        assert summed.users[key] == pytest.approx(value, rel=1e-9)
    assert summed.accounts == pytest.approx(folded.accounts, rel=1e-9)
