"""``overlay simulate``: compare placement policies on a simulated fleet (docs/simulate.md).

``simulate`` is a click command for the main CLI to register; ``python -m cli.simulate``
runs it alone.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from cli import history, report
from cli.accounts import accounts_table, read_shares
from cli.client import DEFAULT_API, Client
from cli.workload_files import RunConfig, default_processes, run_all, table, write_results
from overlay.errors import WorkloadError
from overlay.policies import SUPPORTED


@click.command("simulate")
@click.option("--nodes", type=click.IntRange(min=1), default=1_000, show_default=True,
              help="Nodes in the simulated fleet (mixed A100/H100/L4, four zones).")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Synthetic jobs to replay (not with --workload).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same fleet and jobs.")
@click.option("--policy", "policies", type=click.Choice(SUPPORTED), multiple=True,
              help="A policy to run; repeat for several. Default: all of them.")
@click.option("--workload", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Replay this CSV (docs/simulate.md) instead of synthetic jobs.")
@click.option("--from-history", "from_history", is_flag=True,
              help="Replay the jobs this cluster ran (GET /api/admin/history: the admin token) on its "
                   "recorded fleet, and print what happened beside what each --policy would have done.")
@click.option("--since", "since", default="30d", show_default=True,
              help="With --from-history: jobs submitted within this long (30d, 12h, 3600).")
@click.option("--fleet", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Simulate these nodes (an Alibaba v2023 node table or a plain CSV, docs/simulate.md) "
                   "instead of --nodes x --gpus-per-node synthetic ones.")
@click.option("--shares", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Accounts' fair-share targets and GPU quotas (CSV or JSON, docs/simulate.md): "
                   "jobs are ordered by fair share and held to quotas, and each account is reported.")
@click.option("--backfill/--no-backfill", default=False, show_default=True,
              help="Reserve GPUs for the first job that does not fit, as the scheduler does "
                   "(README: Backfill). Slower: a pass costs the queue. Not with --shares.")
@click.option("--load", type=click.FloatRange(min=0, min_open=True), default=0.95, show_default=True,
              help="Synthetic jobs offer this share of the fleet's GPU-seconds (not with --workload).")
@click.option("--starve-after", "starve_after", type=click.FloatRange(min=0), default=3600.0,
              show_default=True, help="A job that waits longer than this many seconds is starved.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("var/simulate"),
              show_default=True, help="Write results.json and chart.svg into this folder.")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Policies simulated at once. Default: one per CPU, up to the number of policies.")
@click.pass_context
def simulate(ctx: click.Context, nodes: int, gpus_per_node: int, jobs: int, seed: int,
             policies: tuple[str, ...], workload: Path | None, fleet: Path | None, shares: Path | None,
             backfill: bool, from_history: bool, since: str,
             load: float, starve_after: float,
             out: Path, processes: int | None) -> None:
    """Replay a workload under each placement policy with the scheduler's own placement code,
    and print utilization, queue waits, fragmentation and starvation per policy."""
    if from_history:
        client = ctx.find_root().obj if isinstance(ctx.find_root().obj, Client) else Client(DEFAULT_API)
        sharing = read_shares(shares) if shares is not None else None
        recorded = history.fetch(client, since_s=report.seconds(since))
        chosen = list(dict.fromkeys(policies)) or list(SUPPORTED)
        click.echo("\n".join(history.run(recorded, chosen, sharing=sharing)))
        return
    if workload is not None:
        for name in ("jobs", "load"):
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
                raise click.UsageError(f"--{name} is for synthetic jobs; a --workload brings its own")
    if fleet is not None:
        for name in ("nodes", "gpus_per_node"):
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
                flag = name.replace("_", "-")
                raise click.UsageError(f"--{flag} makes a synthetic fleet; --fleet brings its own")
    if backfill and shares is not None:
        raise click.UsageError("--backfill is not simulated with --shares yet")
    config = RunConfig(nodes=nodes, gpus_per_node=gpus_per_node, jobs=jobs, seed=seed, load=load,
                       starve_after_s=starve_after, workload=workload, shares=shares, backfill=backfill,
                       fleet=fleet)
    chosen = list(dict.fromkeys(policies)) or list(SUPPORTED)
    try:
        reports = run_all(config, chosen, processes=processes or default_processes(len(chosen)))
    except WorkloadError as e:
        raise click.ClickException(e.message) from e
    click.echo(table(reports))
    click.echo(f"starved: waited over {starve_after:g}s; unplaced: no node could ever take them; "
               "frag: share of GPUs free while jobs waited")
    if shares is not None:
        click.echo("\n" + accounts_table(reports))
        click.echo("of all: part of the GPU-hours; contended: part of those held while every account "
                   "had jobs waiting, to hold against its share")
    results, chart = write_results(out, config, reports)
    click.echo(f"wrote {results} and {chart}")


if __name__ == "__main__":
    simulate()
