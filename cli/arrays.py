"""The CLI's side of job arrays: an array's summary lines, and `overlay array ID` (counts,
the %N limit, a page of tasks)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from cli import render
from cli.client import Client

ORDER = ("QUEUED", "PLACED", "RUNNING", "DONE", "FAILED", "CANCELLED")


def summary(array: Mapping[str, Any]) -> str:
    """``sweep: 100 tasks (0-99%10), at most 10 at once; 10 RUNNING, 90 QUEUED``."""
    counts = array.get("counts") or {}
    states = ", ".join(f"{counts[s]} {s}" for s in ORDER if counts.get(s))
    limit = f"at most {array['max_running']} at once" if array.get("max_running") else "no limit"
    return f"{array['array_id']}: {array['size']} tasks ({array['expression']}), {limit}; {states or 'none'}"


def lines(array: Mapping[str, Any]) -> list[str]:
    rows = render.job_rows(array.get("tasks") or [], datetime.now(UTC))
    out = [f"array     {summary(array)}", f"user      {array.get('user')} ({array.get('account')})"]
    if rows:
        out += render.table(["TASK", "STATE", "WHERE", "AGE", "REASON"], rows)
    return out


@click.command("array")
@click.argument("array_id")
@click.option("--state", type=click.Choice(render.STATES, case_sensitive=False),
              help="Only tasks in this state.")
@click.option("--limit", type=click.IntRange(0, 500), default=20, show_default=True, help="Tasks to list.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many tasks (by index).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON, for scripts.")
@click.pass_obj
def array(client: Client, array_id: str, state: str | None, limit: int, offset: int, as_json: bool) -> None:
    """A job array: its tasks' counts per state, its %N limit, and a page of its tasks."""
    params: dict[str, Any] = {"limit": limit, "offset": offset, **({"state": state.upper()} if state else {})}
    shown = client.get_json(f"/api/arrays/{array_id}", **params)
    if as_json:
        click.echo(render_json(shown))
    else:
        click.echo("\n".join(lines(shown)))


def render_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
