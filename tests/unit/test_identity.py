"""Ownership decided on values: who may see a job, and which account a submit runs under."""

from __future__ import annotations

import pytest

from overlay.errors import NotAllowed, NotAMember
from overlay.identity import ADMIN, IMPLICIT, Caller, check_may_see, may_see, submit_account
from overlay.model import JobSpec

ALICE = Caller(user="alice", default_account="vision", accounts=frozenset({"vision", "shared"}))
BOB = Caller(user="bob", default_account="vision", accounts=frozenset({"vision"}),
             coordinates=frozenset({"vision"}))


def job(user: str, account: str) -> JobSpec:
    return JobSpec(job_id=f"{user}-{account}", cmd=("true",), user=user, account=account)


@pytest.mark.parametrize(("caller", "spec", "seen"), [
    (ALICE, job("alice", "vision"), True),
    (ALICE, job("bob", "vision"), False),          # same account, not a coordinator
    (BOB, job("alice", "vision"), True),           # coordinator of vision
    (BOB, job("alice", "shared"), False),          # not of shared
    (ADMIN, job("alice", "shared"), True),
    (IMPLICIT, job("default", "default"), True),   # no users: every job is default's
])
def test_a_user_sees_their_own_jobs_a_coordinator_their_accounts_an_admin_all(caller, spec, seen):
    assert may_see(caller, spec) is seen


def test_seeing_another_users_job_is_refused_naming_its_owner():
    with pytest.raises(NotAllowed, match="alice"):
        check_may_see(BOB, job("alice", "shared"))


def test_a_submit_runs_under_the_default_account_or_one_of_the_users():
    assert submit_account(ALICE, None) == "vision"
    assert submit_account(ALICE, "shared") == "shared"
    assert submit_account(ADMIN, "anything") == "anything"
    with pytest.raises(NotAMember) as refused:
        submit_account(ALICE, "nlp")
    assert refused.value.fields["account"] == "nlp" and "shared, vision" in refused.value.message
