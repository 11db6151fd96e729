"""The simulator's accounts at the CLI: the shares file, the workload's account columns,
synthetic jobs with accounts, and the per-account report."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.accounts import accounts_table, parse_quota, read_shares
from cli.simulate import simulate as simulate_command
from cli.workload_files import read_workload
from overlay.errors import WorkloadError
from overlay.quota import Quota
from overlay.workload import USERS_PER_ACCOUNT, synthetic_jobs


def test_a_csv_shares_file_gives_shares_and_quotas(tmp_path):
    path = tmp_path / "shares.csv"
    path.write_text("# who gets what\naccount,share,quota\nvision,60,8;h100=4\nnlp,40,\nguests,,2\n")
    sharing = read_shares(path)
    assert sharing.shares == {"vision": 60.0, "nlp": 40.0}
    assert sharing.quotas == {"vision": Quota(gpus=8, models={"h100": 4}), "guests": Quota(gpus=2)}


def test_a_json_shares_file_says_the_same(tmp_path):
    path = tmp_path / "shares.json"
    entries = [{"account": "vision", "share": 60, "quota": 8}, {"account": "nlp", "share": 40}]
    path.write_text(json.dumps(entries))
    sharing = read_shares(path)
    assert sharing.shares == {"vision": 60.0, "nlp": 40.0} and sharing.quotas == {"vision": Quota(gpus=8)}


@pytest.mark.parametrize(("body", "expected"), [
    ("account,share\nvision,-1\n", "entry 1: share must be a number >= 0, got '-1'"),
    ("account,share\nvision,1\nvision,2\n", "entry 2: account 'vision' appears twice"),
    ("account,quota\nvision,lots\n", "entry 1: quota must be GPUs, model=GPUs, or both split by ';'"),
    ("account,weight\nvision,1\n", "the header names account"),
    ("account,share\nbad name,1\n", "entry 1: account must be 1-128 of"),
    ("account,share\n", "no accounts"),
])
def test_a_bad_shares_file_is_refused_saying_where(tmp_path, body, expected):
    path = tmp_path / "shares.csv"
    path.write_text(body)
    with pytest.raises(WorkloadError) as caught:
        read_shares(path)
    assert expected in str(caught.value)


def test_quotas_read_as_gpus_per_model_or_in_all():
    assert parse_quota("8") == Quota(gpus=8)
    assert parse_quota("H100=4; a100=2") == Quota(models={"h100": 4, "a100": 2})
    with pytest.raises(ValueError):
        parse_quota("=4")


def test_a_workload_csv_may_say_whose_each_job_is(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("submit,gpus,duration_s,account,user\n0,1,60,vision,alice\n1,1,60,,\n")
    jobs = read_workload(path)
    assert [(j.spec.account, j.spec.user) for j in jobs] == [("vision", "alice"), ("default", "default")]
    path.write_text("submit,gpus,duration_s,account\n0,1,60,no way\n")
    with pytest.raises(WorkloadError, match="line 2: account must be 1-128"):
        read_workload(path)


def test_synthetic_jobs_with_accounts_are_the_same_jobs_each_owned_by_one():
    plain = list(synthetic_jobs(300, total_gpus=64, seed=3))
    owned = list(synthetic_jobs(300, total_gpus=64, seed=3, accounts=["vision", "nlp"]))
    assert [(j.spec.gpus, j.submit_s, j.duration_s) for j in plain] == \
        [(j.spec.gpus, j.submit_s, j.duration_s) for j in owned]
    assert {j.spec.account for j in plain} == {"default"}
    assert {j.spec.account for j in owned} == {"vision", "nlp"}
    users = {f"{a}-{k}" for a in ("vision", "nlp") for k in range(USERS_PER_ACCOUNT)}
    assert {j.spec.user for j in owned} == users


def test_the_command_reports_each_accounts_gpu_hours_against_its_share(tmp_path):
    # Given two accounts, 3:1, and far more work than the fleet can run
    shares = tmp_path / "shares.csv"
    shares.write_text("account,share,quota\nbig,3,\nsmall,1,\n")
    # When the command runs with --shares
    result = CliRunner().invoke(simulate_command, [
        "--nodes", "2", "--jobs", "3000", "--load", "3", "--policy", "best-fit", "--shares", str(shares),
        "--out", str(tmp_path / "out")])
    # Then it prints a row per account, and results.json has each account's figures
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["policy", "account"])
    assert lines[header + 1].split()[:3] == ["best-fit", "big", "75.0%"]
    assert lines[header + 2].split()[:3] == ["best-fit", "small", "25.0%"]
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    accounts = {a["account"]: a for a in report["policies"][0]["accounts"]}
    assert set(accounts) == {"big", "small"} and report["config"]["shares"] == str(shares)
    assert accounts["big"]["contended_use"] > accounts["small"]["contended_use"]
    assert accounts_table(report["policies"]) in result.output


def test_the_command_refuses_a_bad_shares_file(tmp_path):
    shares = tmp_path / "shares.csv"
    shares.write_text("account,share\nvision,many\n")
    result = CliRunner().invoke(simulate_command, ["--nodes", "2", "--jobs", "10", "--shares", str(shares),
                                                   "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "share must be a number >= 0, got 'many'" in result.output
