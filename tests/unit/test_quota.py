"""Quotas and borrowing: the gate's decisions on placements (pure)."""

from __future__ import annotations

from overlay.model import GpuDevice, JobSpec, NodeSnapshot, NoFit, Placement
from overlay.policies import get_policy
from overlay.quota import ADMITTED, Admission, Quota, QuotaGate, admit_all


def node(name: str, model: str = "NVIDIA A100-SXM4-80GB", gpus: int = 8,
         taken: frozenset[int] = frozenset()) -> NodeSnapshot:
    return NodeSnapshot(name=name, taken=taken, gpus=tuple(
        GpuDevice(index=i, uuid=f"{name}-{i}", name=model, memory_total_mb=81920) for i in range(gpus)))


def busy(name: str, first: int, gpus: int = 8) -> NodeSnapshot:
    """A node whose GPUs 0..first-1 are taken."""
    return node(name, gpus=gpus, taken=frozenset(range(first)))


def job(account: str, gpus: int = 1, job_id: str = "j") -> JobSpec:
    return JobSpec(job_id=job_id, cmd=("true",), gpus=gpus, account=account)


def on(node_name: str, *gpus: int) -> Placement:
    return Placement(node=node_name, gpus=gpus)


def test_a_job_within_its_quota_is_admitted_and_counted():
    gate = QuotaGate({"vision": Quota(gpus=4)}, [node("a")])
    assert gate(job("vision", 2), on("a", 0, 1)) == ADMITTED
    assert gate.holding("vision") == 2


def test_a_job_over_its_quota_waits_saying_so_when_other_quotas_claim_the_idle_gpus():
    # Given 16 GPUs, vision holding its 8 and nlp owed its 8
    gate = QuotaGate({"vision": Quota(gpus=8), "nlp": Quota(gpus=8)}, [busy("a", 8), node("b")],
                     held=[("vision", on("a", *range(8)))])
    # When vision asks for one more
    verdict = gate(job("vision"), on("b", 0))
    # Then it waits, with the reason people read, and nothing is counted
    assert isinstance(verdict, NoFit)
    assert verdict.reason == "account vision at its quota: 8 of 8 GPUs"
    assert verdict.details["held"] == 8 and verdict.details["quota"] == 8
    assert gate.holding("vision") == 8


def test_a_job_that_would_pass_its_quota_names_what_it_needs():
    gate = QuotaGate({"vision": Quota(gpus=8), "nlp": Quota(gpus=8)}, [busy("a", 6), node("b")],
                     held=[("vision", on("a", *range(6)))])
    verdict = gate(job("vision", 4), on("b", 0, 1, 2, 3))
    assert isinstance(verdict, NoFit)
    assert verdict.reason == "account vision at its quota: 6 of 8 GPUs (the job needs 4)"


def test_a_job_over_its_quota_borrows_idle_gpus_beyond_every_other_accounts_guarantee():
    # Given 24 GPUs: vision holds its 8, nlp's 8 are owed to it, 8 more are nobody's
    gate = QuotaGate({"vision": Quota(gpus=8), "nlp": Quota(gpus=8)}, [busy("a", 8), node("b"), node("c")],
                     held=[("vision", on("a", *range(8)))])
    # When vision asks for 8 more, then for 1 more still
    first = gate(job("vision", 8), on("c", *range(8)))
    second = gate(job("vision", 1), on("b", 0))
    # Then the first borrows the unowed 8; the second would eat into nlp's guarantee and waits
    assert first == Admission(borrowed=True)
    assert isinstance(second, NoFit) and second.reason == "account vision at its quota: 16 of 8 GPUs"


def test_an_account_borrows_what_another_leaves_idle_beyond_its_unused_quota():
    # nlp's quota is 4 and it holds 2: only 2 of the 8 idle GPUs are owed to it
    gate = QuotaGate({"vision": Quota(gpus=0), "nlp": Quota(gpus=4)}, [busy("a", 2, gpus=10)],
                     held=[("nlp", on("a", 0, 1))])
    assert gate(job("vision", 6), on("a", *range(2, 8))) == Admission(borrowed=True)
    assert isinstance(gate(job("vision", 1), on("a", 8)), NoFit)
    assert gate(job("nlp", 2), on("a", 8, 9)) == ADMITTED


def test_released_gpus_count_again_for_the_quota():
    gate = QuotaGate({"vision": Quota(gpus=2), "nlp": Quota(gpus=6)}, [node("a")])
    assert gate(job("vision", 2), on("a", 0, 1)) == ADMITTED
    assert isinstance(gate(job("vision", 1), on("a", 2)), NoFit)
    gate.release("vision", on("a", 0, 1))
    assert gate(job("vision", 1), on("a", 2)) == ADMITTED


def test_a_per_model_quota_counts_only_gpus_of_that_model():
    # Given vision may hold 2 H100s, any number of A100s; nlp is owed the other H100s
    quotas = {"vision": Quota(models={"H100": 2}), "nlp": Quota(models={"h100": 2})}
    gate = QuotaGate(quotas, [node("h", "NVIDIA H100 80GB HBM3", gpus=4), node("a")])
    assert gate(job("vision", 2), on("h", 0, 1)) == ADMITTED
    assert gate(job("vision", 8), on("a", *range(8))) == ADMITTED
    verdict = gate(job("vision", 1), on("h", 2))
    assert isinstance(verdict, NoFit)
    assert verdict.reason == "account vision at its h100 quota: 2 of 2 GPUs"
    assert gate.holding("vision") == 10 and gate.holding("vision", "h100") == 2


def test_accounts_without_a_quota_and_jobs_without_gpus_are_always_admitted():
    gate = QuotaGate({"vision": Quota(gpus=0), "nlp": Quota(gpus=8)}, [node("a")])
    assert gate(job("default", 8), on("a", *range(8))) == ADMITTED
    assert gate(job("vision", 0), on("a")) == ADMITTED
    assert admit_all(job("vision", 8), on("a", 0)) == ADMITTED


def test_taken_gpus_and_offline_nodes_are_not_idle():
    # Given the only free GPUs are 2 on node a; vision is at its quota of 0
    offline = NodeSnapshot(name="b", gpus=node("b").gpus, state="offline")  # type: ignore[arg-type]
    gate = QuotaGate({"vision": Quota(gpus=0)}, [node("a", taken=frozenset(range(6))), offline])
    assert gate(job("vision", 2), on("a", 6, 7)) == Admission(borrowed=True)
    assert isinstance(gate(job("vision", 1), on("b", 0)), NoFit)


# -- in a scheduling pass ------------------------------------------------------------------------------

def test_a_pass_skips_a_job_at_its_quota_places_the_next_and_marks_borrowing():
    # Given 24 free GPUs; vision's quota is 4 and nlp is owed 12
    from overlay.fleet import Fleet
    from overlay.queueing import QueuedJob, plan_pass

    nodes = [node("a"), node("b"), node("c")]
    gate = QuotaGate({"vision": Quota(gpus=4), "nlp": Quota(gpus=12)}, nodes)
    jobs = [QueuedJob(spec=job(account, gpus, job_id)) for account, gpus, job_id in
            [("nlp", 8, "1-n1"), ("vision", 4, "2-v1"), ("vision", 4, "3-v2"), ("vision", 4, "4-v3"),
             ("vision", 4, "5-v4"), ("nlp", 4, "6-n2")]]
    # When one pass decides them in queue order (here: job_id)
    fleet = Fleet.from_snapshots(nodes)
    decisions = {d.job_id: d for d in plan_pass(jobs, fleet, policy=get_policy("best-fit"), admit=gate)}
    # Then n1 and v1 fit their quotas; v2 and v3 borrow what nlp is not owed; v4 would take
    # nlp's last 4 and waits; n2 gets them, within its quota
    placed = {k[2:]: d.borrowed for k, d in decisions.items() if isinstance(d.outcome, Placement)}
    assert placed == {"n1": False, "v1": False, "v2": True, "v3": True, "n2": False}
    assert isinstance(decisions["5-v4"].outcome, NoFit)
    assert decisions["5-v4"].outcome.reason == "account vision at its quota: 12 of 4 GPUs"
    assert gate.holding("vision") == 12 and gate.holding("nlp") == 12
