"""``overlay``: submit, watch and cancel jobs and look at the fleet, over the API's HTTP only.

    overlay submit --gpus 1 --wait -- sh -c 'echo $CUDA_VISIBLE_DEVICES; sleep 3'
    overlay logs --follow JOB_ID
    overlay nodes

OVERLAY_API (or --api) names the API, OVERLAY_API_TOKEN is sent as a bearer token.
Exit status: 0 ok, 1 the API refused (or the job failed, with --wait), 2 the API
could not be reached.
"""

from __future__ import annotations

import codecs
import importlib
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from cli import arrays, render, report
from cli.arrays import render_json
from cli.client import DEFAULT_API, Client, CliError

# The long-poll each wait step asks for: short, so state changes show as they happen.
POLL_S = 1.0
UNITS_MIB = {"": 1, "m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024**2}
UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


Callback = Callable[[click.Context, click.Parameter, str | None], int | None]


def scaled(units: dict[str, int], what: str) -> Callback:
    """A click callback reading ``40G`` / ``90m`` style numbers into MiB or seconds."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if not m or m.group(2).lower() not in units:
            raise click.BadParameter(f"{value!r} is not {what}")
        return round(float(m.group(1)) * units[m.group(2).lower()])

    return convert


def pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``("zone=a", "tier=prod")`` -> ``{"zone": "a", "tier": "prod"}``."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        out[key] = value
    return out


def maybe_array(client: Client, array_id: str, **params: Any) -> dict[str, Any] | None:
    """The array ``array_id`` (with a page of its tasks), or None if there is none."""
    try:
        return client.get_json(f"/api/arrays/{array_id}", **params)  # type: ignore[no-any-return]
    except CliError:
        return None


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def exit_status(job: dict[str, Any]) -> int:
    """The shell's view of how a job ended: 0 done, its exit code if it had one, else 1."""
    if job["state"] == "DONE":
        return 0
    code = job.get("exit_code")
    if isinstance(code, int) and code < 0:
        return min(128 - code, 255)  # killed by signal N, as a shell reports it
    return min(code, 255) if isinstance(code, int) and code > 0 else 1


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON, for scripts.")


class LazyGroup(click.Group):
    """A group whose heavier subcommands are imported only when run or listed (click's documented pattern)."""

    lazy = {"simulate": "cli.simulate:simulate", "array": "cli.arrays:array", "report": "cli.report:report",
            "admin": "cli.admin:admin", "share": "cli.sharing:share", "usage": "cli.sharing:usage"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, name = self.lazy[cmd_name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api", envvar="OVERLAY_API", default=DEFAULT_API, show_default=True, show_envvar=True,
              help="The overlay API's address.")
@click.option("--token", envvar="OVERLAY_API_TOKEN", default="", show_envvar=True,
              help="Sent as 'Authorization: Bearer TOKEN'.")
@click.pass_context
def main(ctx: click.Context, api: str, token: str) -> None:
    """overlay: run commands on GPUs across the fleet, and watch them."""
    ctx.obj = Client(api, token=token)


@main.command(context_settings={"allow_interspersed_args": False})
@click.option("--gpus", type=click.IntRange(min=0), help="GPUs on one node (default 0: CPU only).")
@click.option("--nodes", type=click.IntRange(1, 64),
              help="A gang job: this many parts, each on its own node with --gpus GPUs (default 1).")
@click.option("--gpu-memory", callback=scaled(UNITS_MIB, "a memory size like 40G or 40000"),
              help="Minimum memory of each GPU: MiB, or 40G.")
@click.option("--gpu-model", help="Part of the GPU name, e.g. a100 or H100.")
@click.option("--image", help="Run in Apptainer: a .sif, a sandbox folder, or a registry name.")
@click.option("--label", "labels", multiple=True, callback=pairs, metavar="KEY=VALUE",
              help="A label the node must have (repeatable).")
@click.option("--priority", type=click.IntRange(-1000, 1000), help="Higher runs first.")
@click.option("--account", help="The account to run under (one of yours; default: your default account).")
@click.option("--timeout", callback=scaled(UNITS_S, "a duration like 3600, 90m or 2h"),
              help="Kill the job after this: seconds, or 90m, 2h.")
@click.option("--env", "env", multiple=True, callback=pairs, metavar="KEY=VALUE",
              help="An environment variable for the job (repeatable).")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries if its node is lost.")
@click.option("--no-preempt", "no_preempt", is_flag=True,
              help="Never preempt this job (it then never borrows GPUs beyond its account's quota).")
@click.option("--job-id", help="Your id for the job (default: generated); an array's id with --array.")
@click.option("--array", help="A job array, as Slurm's --array: 0-99, 1,3,5-9:2, 0-999%50 (50 at once).")
@click.option("--after", multiple=True, metavar="IDS",
              help="Start once these jobs or arrays ended DONE (afterok).")
@click.option("--after-any", multiple=True, metavar="IDS", help="Start once these ended, however (afterany).")
@click.option("--after-notok", multiple=True, metavar="IDS",
              help="Start once these ended FAILED or CANCELLED (afternotok).")
@click.option("--wait", is_flag=True, help="Wait for the end, show progress, exit with the job's status.")
@json_option
@click.argument("cmd", nargs=-1, required=True)
@click.pass_obj
def submit(client: Client, cmd: tuple[str, ...], wait: bool, as_json: bool, **options: Any) -> None:
    """Submit CMD (put it after --). Prints the job's id (or the array's)."""
    if wait and options["array"]:
        raise click.UsageError("--wait follows one job; watch an array with: overlay array ID")
    job = client.post_json("/api/jobs", submit_body(cmd, **options))
    if "job_id" not in job:  # an array's answer: the array and its counts
        click.echo(render_json(job) if as_json else f"submitted array {arrays.summary(job)}")
        return
    if not wait:
        if as_json:
            emit_json(job)
        else:
            click.echo(f"submitted {job['job_id']} ({job['state']})")
        return
    click.echo(f"submitted {job['job_id']}", err=True)
    job = wait_for_end(client, job)
    if as_json:
        emit_json(job)
    sys.exit(exit_status(job))


def submit_body(cmd: tuple[str, ...], **o: Any) -> dict[str, Any]:
    """The POST /api/jobs body: only what was given, so the API's defaults apply."""
    body: dict[str, Any] = {
        "cmd": list(cmd), "job_id": o["job_id"], "image": o["image"], "gpus": o["gpus"],
        "nodes": o.get("nodes"),
        "gpu_memory_mb": o["gpu_memory"], "gpu_model": o["gpu_model"], "priority": o["priority"],
        "timeout_s": o["timeout"], "max_retries": o["max_retries"], "account": o.get("account"),
        "node_selector": o["labels"] or None, "env": o["env"] or None, "array": o.get("array"),
        "depends_on": depends_on(o.get("after", ()), o.get("after_any", ()), o.get("after_notok", ())),
        "preemptible": False if o.get("no_preempt") else None,
    }
    return {k: v for k, v in body.items() if v is not None}


def depends_on(afterok: tuple[str, ...], afterany: tuple[str, ...],
               afternotok: tuple[str, ...]) -> dict[str, list[str]] | None:
    """``--after a,b --after-any c`` -> ``{"afterok": ["a", "b"], "afterany": ["c"]}`` (None: none)."""
    kinds = {"afterok": afterok, "afterany": afterany, "afternotok": afternotok}
    out = {k: [i for v in values for i in v.split(",") if i] for k, values in kinds.items()}
    return {k: v for k, v in out.items() if v} or None


def wait_for_end(client: Client, job: dict[str, Any], *, show: bool = True) -> dict[str, Any]:
    """Long-poll the job until it ends, printing each change to stderr; the final job."""
    started, last = time.monotonic(), None
    try:
        while True:
            seen = (job["state"], job.get("reason"), job.get("node"))
            if show and seen != last:
                click.echo(render.progress(job, time.monotonic() - started), err=True)
                last = seen
            if job["state"] in render.TERMINAL:
                return job
            job = poll(client, job["job_id"])
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; {job['job_id']} carries on "
                       f"(overlay cancel {job['job_id']} stops it)", exit_code=130) from None


def poll(client: Client, job_id: str) -> dict[str, Any]:
    """The job after at most POLL_S (at once if it ends meanwhile)."""
    response = client.get(f"/api/jobs/{job_id}", params={"wait": POLL_S}, read_timeout=POLL_S + 30)
    return response.json()  # type: ignore[no-any-return]


@main.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def status(client: Client, job_id: str, as_json: bool) -> None:
    """One job (or array): state, reason, node and GPUs, timestamps, what it asked for."""
    try:
        job = client.get_json(f"/api/jobs/{job_id}")
    except CliError:
        shown = maybe_array(client, job_id)
        if shown is None:
            raise
        click.echo(render_json(shown) if as_json else "\n".join(arrays.lines(shown)))
        return
    if as_json:
        emit_json(job)
    else:
        click.echo("\n".join([*render.job_lines(job), *report.status_lines(job)]))


@main.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def events(client: Client, job_id: str, as_json: bool) -> None:
    """A job's history: every state change (and note, such as a preemption) with when, which
    attempt, where and why."""
    found = client.get_json(f"/api/jobs/{job_id}/events")
    if as_json:
        emit_json(found)
        return
    rows = render.event_rows(found, datetime.now(UTC))
    click.echo("\n".join(render.table(["WHEN", "MOVE", "ATTEMPT", "WHERE", "REASON"], rows)))


@main.command("list")
@click.option("--state", type=click.Choice(render.STATES, case_sensitive=False),
              help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--idle", is_flag=True, help="Only running jobs whose GPUs are all idle.")
@json_option
@click.pass_obj
def list_jobs(client: Client, state: str | None, limit: int, as_json: bool, idle: bool) -> None:
    """Jobs, newest first."""
    if idle:
        return report.list_idle(client, as_json)
    params: dict[str, Any] = {"limit": limit, **({"state": state.upper()} if state else {})}
    page = client.get_json("/api/jobs", **params)
    if as_json:
        emit_json(page)
        return
    rows = render.job_rows(page["jobs"], datetime.now(UTC))
    click.echo("\n".join(render.table(["JOB", "STATE", "WHERE", "AGE", "REASON"], rows)))
    click.echo(f"({len(rows)} of {page['total']} jobs)", err=True)


@main.command()
@click.argument("job_id", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--part", type=click.IntRange(min=0), default=0, show_default=True,
              help="A gang job's part (its NODE_RANK) whose output to show.")
@click.pass_obj
def logs(client: Client, job_id: str | None, follow: bool, part: int) -> None:
    """A job's output (without JOB_ID: the newest job's)."""
    if job_id is None:
        job_id = newest_job(client)
    if not follow:
        click.echo(client.get(f"/api/jobs/{job_id}/logs", params=part_param(part)).text, nl=False)
        return
    follow_logs(client, job_id, part)


def part_param(part: int) -> dict[str, int]:
    """``?part=`` only when asked for, so a server without gang jobs still answers."""
    return {"part": part} if part else {}


def newest_job(client: Client) -> str:
    jobs = client.get_json("/api/jobs", limit=1)["jobs"]
    if not jobs:
        raise CliError("there are no jobs yet")
    click.echo(f"(the newest job: {jobs[0]['job_id']})", err=True)
    return str(jobs[0]["job_id"])


def follow_logs(client: Client, job_id: str, part: int = 0) -> None:
    """Print new output as it comes; stop once the job has ended and everything is out.

    The state is read before the output, so output read after a terminal state is all there is.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset, started, last = 0, time.monotonic(), None
    job = client.get_json(f"/api/jobs/{job_id}")
    while True:
        if job["state"] != last:
            click.echo(render.progress(job, time.monotonic() - started), err=True)
            last = job["state"]
        offset = drain(client, job_id, offset, decoder, part)
        if job["state"] in render.TERMINAL:
            click.echo(decoder.decode(b"", final=True), nl=False)
            return
        job = poll(client, job_id)


def drain(client: Client, job_id: str, offset: int, decoder: codecs.IncrementalDecoder, part: int = 0) -> int:
    """Print the output from ``offset`` until none is left; the new offset."""
    while True:
        chunk = client.get(f"/api/jobs/{job_id}/logs", params={"offset": offset, **part_param(part)}).content
        if not chunk:
            return offset
        offset += len(chunk)
        click.echo(decoder.decode(chunk), nl=False)
        sys.stdout.flush()


@main.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def cancel(client: Client, job_id: str, as_json: bool) -> None:
    """Cancel a job, or every task of an array; running processes are killed."""
    try:
        job = client.post_json(f"/api/jobs/{job_id}/cancel")
    except CliError:
        if maybe_array(client, job_id, limit=0) is None:
            raise
        shown = client.post_json(f"/api/arrays/{job_id}/cancel")
        click.echo(render_json(shown) if as_json else f"cancelled array {arrays.summary(shown)}")
        return
    if as_json:
        emit_json(job)
    else:
        click.echo(f"cancelled {job['job_id']}")


@main.command()
@click.option("--all", "include_offline", is_flag=True, help="Include offline nodes.")
@click.option("--ascii", "ascii_only", is_flag=True, help="Draw bars with # and . only.")
@json_option
@click.pass_obj
def nodes(client: Client, include_offline: bool, ascii_only: bool, as_json: bool) -> None:
    """Nodes and their GPUs: utilization and memory bars, and the job holding each GPU."""
    data = client.get_json("/api/nodes", **({"include": "offline"} if include_offline else {}))
    if as_json:
        emit_json(data)
        return
    data = report.flag_idle_gpus(client, data)
    if not data["nodes"]:
        click.echo("no live nodes (overlay nodes --all shows offline ones)")
    ascii_only = ascii_only or (sys.stdout.encoding or "").lower().replace("-", "") != "utf8"
    blocks = ["\n".join(render.node_lines(n, ascii_only=ascii_only)) for n in data["nodes"]]
    click.echo("\n\n".join(blocks))


@main.command()
@json_option
@click.pass_obj
def policies(client: Client, as_json: bool) -> None:
    """Placement policies: which is active, which exist."""
    data = client.get_json("/api/policies")
    if as_json:
        emit_json(data)
        return
    descriptions = data.get("descriptions") or {}
    for name in data["supported"]:
        mark = "*" if name == data["active"] else " "
        click.echo(f"{mark} {name:<12} {descriptions.get(name, '')}".rstrip())
