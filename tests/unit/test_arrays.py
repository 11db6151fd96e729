"""The array syntax (Slurm's --array) against a brute-force expansion, and the %N limit a
pass applies (hold_back before placement, ArrayGate while placing)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.arrays import (
    MAX_INDEX,
    PATTERN,
    ArrayError,
    ArrayGate,
    ArrayLoad,
    hold_back,
    parse_array,
)
from overlay.launch import job_env
from overlay.model import JobSpec, NoFit, Placement
from overlay.quota import Admission, admit_all

# Small indices keep the brute force quick; test_slurm_examples covers the top of the range.
TOP = 3000
index = st.integers(min_value=0, max_value=TOP)
item = st.tuples(index, index, st.integers(min_value=1, max_value=TOP), st.sampled_from(["n", "r", "s"]))


def render(lo: int, hi: int, step: int, form: str) -> str:
    lo, hi = min(lo, hi), max(lo, hi)
    return {"n": f"{lo}", "r": f"{lo}-{hi}", "s": f"{lo}-{hi}:{step}"}[form]


def brute(items: list[tuple[int, int, int, str]]) -> set[int]:
    """Every index 0..TOP that some item names, checked one index at a time."""

    def names(i: int, lo: int, hi: int, step: int, form: str) -> bool:
        lo, hi = min(lo, hi), max(lo, hi)
        if form == "n":
            return i == lo
        return lo <= i <= hi and (form == "r" or (i - lo) % step == 0)

    return {i for i in range(TOP + 1) if any(names(i, *it) for it in items)}


@settings(deadline=None)
@given(st.lists(item, min_size=1, max_size=5), st.none() | st.integers(min_value=1, max_value=100_000))
def test_an_expression_names_exactly_the_indices_its_items_name(items, limit):
    text = ",".join(render(*i) for i in items) + (f"%{limit}" if limit else "")
    parsed = parse_array(text)
    assert set(parsed.indices) == brute(items)
    assert list(parsed.indices) == sorted(set(parsed.indices))
    assert parsed.limit == limit
    assert len(parsed.indices) <= MAX_INDEX + 1


@given(st.text(alphabet="0123456789-,:%x ", max_size=20))
def test_any_text_parses_or_is_refused_with_array_error_and_the_pattern_agrees(text):
    try:
        parse_array(text)
    except ArrayError:
        return
    assert re.match(PATTERN, text)


@pytest.mark.parametrize("text", ["", "5-3", "0-100000", "1:2", "0-9:0", "0-9%0", "-1", "1,,2", "1%2%3", "a"])
def test_malformed_or_empty_expressions_are_refused(text):
    with pytest.raises(ArrayError):
        parse_array(text)


def test_slurm_examples():
    assert parse_array("0-999%50").indices == tuple(range(1000))
    assert parse_array("0-999%50").limit == 50
    assert parse_array("1,3,5-9:2").indices == (1, 3, 5, 7, 9)
    assert parse_array("7").indices == (7,)
    assert len(parse_array(f"0-{MAX_INDEX}").indices) == 100_000


def task(array_id: str, i: int) -> JobSpec:
    return JobSpec(job_id=f"{array_id}_{i}", cmd=("x",), array_id=array_id, array_index=i)


def test_hold_back_keeps_the_first_tasks_by_index_up_to_the_room_left():
    queued = [task("a", i) for i in (5, 1, 3, 0, 2)] + [task("b", 0), JobSpec(job_id="plain", cmd=("x",))]
    held = hold_back(queued, {"a": ArrayLoad(limit=3, running=1)})
    assert sorted(held) == ["a_2", "a_3", "a_5"]  # room for 2: a_0 and a_1
    assert held["a_3"] == "array a at its limit: 3 running"


def test_the_gate_admits_up_to_the_limit_then_refuses_with_the_reason():
    gate = ArrayGate(admit_all, {"a": ArrayLoad(limit=2, running=1)})
    at = Placement(node="n", gpus=(0,))
    assert isinstance(gate(task("a", 0), at), Admission)
    refused = gate(task("a", 1), at)
    assert isinstance(refused, NoFit) and refused.reason == "array a at its limit: 2 running"
    assert isinstance(gate(task("b", 0), at), Admission)  # an array without a limit


def test_a_task_sees_its_array_and_index_as_overlay_and_slurm_name_them():
    env = job_env(task("sweep", 7), (0,), agent_env={})
    seen = (env["OVERLAY_ARRAY_ID"], env["OVERLAY_ARRAY_INDEX"], env["SLURM_ARRAY_TASK_ID"])
    assert seen == ("sweep", "7", "7")
    assert "OVERLAY_ARRAY_ID" not in job_env(JobSpec(job_id="plain", cmd=("x",)), (), agent_env={})
