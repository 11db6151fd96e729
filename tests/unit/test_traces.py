"""Public traces as simulator input: the Alibaba v2023 pod and node tables, a Philly/Helios
job table, a plain fleet CSV, and the shipped examples replaying end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.simulate import simulate
from cli.traces import alibaba_model, read_fleet
from cli.workload_files import read_workload
from overlay.errors import WorkloadError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POD_HEADER = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
              "deletion_time,scheduled_time")


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_alibaba_pods_become_whole_gpu_jobs_with_model_and_lifetime(tmp_path) -> None:
    # Given a shared-GPU pod, a 4-GPU pod with model alternatives, a CPU pod and a pending one
    path = write(tmp_path, "pods.csv", POD_HEADER,
                 "pod-a,8000,16384,1,250,T4,LS,Running,100,700,160",
                 "pod-b,8000,16384,4,1000,V100M16|V100M32,BE,Succeeded,50,1050,,",
                 "pod-c,8000,16384,0,0,,BE,Succeeded,10,20,10",
                 "pod-d,8000,16384,2,1000,,BE,Pending,30,,")

    # When read
    jobs = read_workload(path)

    # Then two jobs, in creation order from the first: b at 0, a at 50 s
    assert [(j.spec.job_id, j.submit_s) for j in jobs] == [("pod-b", 0.0), ("pod-a", 50.0)]
    b, a = jobs
    # a quarter GPU takes a whole one; it runs from scheduled to deletion; LS is high priority
    assert (a.spec.gpus, a.spec.gpu_model, a.duration_s, a.spec.priority) == (1, "T4", 540.0, 100)
    # no scheduled_time: from creation; alternatives share the prefix V100M
    assert (b.spec.gpus, b.spec.gpu_model, b.duration_s, b.spec.priority) == (4, "V100M", 1000.0, -100)


def test_a_philly_table_keeps_user_and_vc_and_leaves_out_jobs_that_never_ran(tmp_path) -> None:
    # (j3's epoch seconds are 2020-03-31 23:56:40 UTC: before j1)
    header = "job_id,user,vc,gpu_num,node_num,submit_time,start_time,end_time,state"
    path = write(tmp_path, "jobs.csv", header,
                 "j1,alice,vc1,8,1,2020-04-01 00:00:00,2020-04-01 00:10:00,2020-04-01 01:10:00,COMPLETED",
                 "j2,bob,vc2,2,1,2020-04-01 00:05:00,,2020-04-01 00:06:00,CANCELLED",
                 "j3,bob,vc2,1,1,1585699000,1585699100,1585699400,FAILED")
    jobs = read_workload(path)
    assert [(j.spec.job_id, j.spec.user, j.spec.account, j.spec.gpus, j.duration_s) for j in jobs] == [
        ("j3", "bob", "vc2", 1, 300.0), ("j1", "alice", "vc1", 8, 3600.0)]


def test_a_bad_trace_line_is_named(tmp_path) -> None:
    path = write(tmp_path, "pods.csv", POD_HEADER, "pod-a,1,1,many,0,,LS,Running,1,2,1")
    with pytest.raises(WorkloadError, match="line 2: num_gpu and gpu_milli must be numbers"):
        read_workload(path)


def test_fleets_from_the_alibaba_node_table_and_a_plain_csv(tmp_path) -> None:
    alibaba = read_fleet(write(tmp_path, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model",
                               "n1,96000,786432,8,V100M32", "n2,64000,262144,0,", "n3,96000,786432,2,T4"))
    assert [(n.name, len(n.gpus), n.gpus[0].name, n.gpus[0].memory_total_mb) for n in alibaba] == [
        ("n1", 8, "V100M32", 32768), ("n3", 2, "T4", 15360)]
    plain = read_fleet(write(tmp_path, "fleet.csv", "name,gpus,model,memory_mb,labels",
                             "dgx-1,8,NVIDIA A100-SXM4-80GB,81920,zone=a;rack=r1"))
    (dgx,) = plain
    assert (len(dgx.gpus), dgx.gpus[7].memory_total_mb, dgx.labels["zone"], dgx.labels["rack"]) == (
        8, 81920, "a", "r1")
    with pytest.raises(WorkloadError, match="header: a fleet needs"):
        read_fleet(write(tmp_path, "bad.csv", "host,cards"))


def test_model_alternatives_share_their_prefix() -> None:
    assert alibaba_model("V100M16|V100M32") == "V100M"
    assert alibaba_model("A10") == "A10" and alibaba_model("") == "" and alibaba_model("T4|A10") == ""


@pytest.mark.parametrize(("workload", "fleet"), [("alibaba_pods.csv", "alibaba_nodes.csv"),
                                                 ("philly_jobs.csv", "fleet.csv")])
def test_the_shipped_examples_replay_on_their_fleets(tmp_path, workload: str, fleet: str) -> None:
    result = CliRunner().invoke(simulate, ["--workload", str(EXAMPLES / workload), "--fleet",
                                           str(EXAMPLES / fleet), "--policy", "best-fit", "--processes", "1",
                                           "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("best-fit")
    assert (tmp_path / "results.json").is_file()
