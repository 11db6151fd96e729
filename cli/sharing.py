"""``overlay share`` (like sshare) and ``overlay usage`` (like sreport): fair share and GPU-hours."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from cli import render
from cli.client import Client
from cli.report import seconds


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def share_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for a in data["accounts"]:
        share = "-" if a["share"] is None else f"{a['share']:g}"
        rows.append([a["account"], "", share, f"{a['normalized_share']:.3f}", f"{a['usage'] / 3600:.2f}",
                     f"{a['normalized_usage']:.3f}", f"{a['fairshare_factor']:.3f}"])
        for u in a["users"]:
            rows.append(["", u["user"], "", "", f"{u['usage'] / 3600:.2f}", "", f"{u['user_factor']:.3f}"])
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_obj
def share(client: Client, as_json: bool) -> None:
    """Per account and user: share, decayed usage (GPU-hours) and fair-share factor.

    FAIRSHARE is 1 with no usage, 0.5 when an account's part of the usage matches its part
    of the shares, lower above it; it weighs most in a waiting job's priority.
    """
    data = client.get_json("/api/share")
    if as_json:
        emit(data)
        return
    click.echo(f"usage decayed with a half-life of {render.duration(data['half_life_s'])}")
    click.echo("\n".join(render.table(
        ["ACCOUNT", "USER", "SHARE", "NORM SHARE", "USAGE (GPU-h)", "NORM USAGE", "FAIRSHARE"],
        share_rows(data))))


@click.command()
@click.option("--by", "group_by", type=click.Choice(["account", "user", "gpu_model"]), default="account",
              show_default=True)
@click.option("--since", help="A start: an ISO time (2026-01-01) or a duration back from now (7d, 12h).")
@click.option("--until", help="An end: an ISO time or a duration back from now.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_obj
def usage(client: Client, group_by: str, since: str | None, until: str | None, as_json: bool) -> None:
    """GPU-hours of ended attempts per account, user or GPU model in a period."""
    params = {"group_by": group_by}
    now = datetime.now(UTC)
    for name, text in (("since", since), ("until", until)):
        if text:
            params[name] = when(text, now).isoformat()
    data = client.get_json("/api/usage", **params)
    if as_json:
        emit(data)
        return
    period = f"{data['since'] or 'the start'} .. {data['until'] or 'now'}"
    click.echo(f"GPU-hours by {group_by}, {period}")
    rows = [[r["group"] or "-", f"{r['gpu_hours']:.2f}", str(r["attempts"])] for r in data["rows"]]
    rows.append(["TOTAL", f"{sum(r['gpu_hours'] for r in data['rows']):.2f}",
                 str(sum(r["attempts"] for r in data["rows"]))])
    click.echo("\n".join(render.table([group_by.upper(), "GPU-HOURS", "ATTEMPTS"], rows)))


def when(text: str, now: datetime) -> datetime:
    """``7d`` -> now less 7 days; ``2026-01-01`` or a full ISO time -> that time (UTC if no zone)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return now - timedelta(seconds=seconds(text))
    return at if at.tzinfo else at.replace(tzinfo=UTC)
