"""``overlay admin``: accounts, users and their tokens (needs the admin token)."""

from __future__ import annotations

import json
from typing import Any

import click

from cli import render
from cli.client import Client


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def model_quotas(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    """``("h100=4",)`` -> ``{"h100": 4}``."""
    out = {}
    for item in values:
        model, sep, gpus = item.partition("=")
        if not sep or not model or not gpus.isdigit():
            raise click.BadParameter(f"{item!r} is not MODEL=GPUS (e.g. h100=4)")
        out[model] = int(gpus)
    return out


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")


@click.group()
def admin() -> None:
    """Accounts, users and tokens (OVERLAY_API_TOKEN must be the admin token)."""


@admin.group()
def account() -> None:
    """Accounts (teams): fair-share share and GPU quota."""


def quota_text(a: dict[str, Any]) -> str:
    parts = [] if a["quota"] is None else [str(a["quota"])]
    parts += [f"{m}={n}" for m, n in sorted(a["quota_models"].items())]
    return ", ".join(parts) or "-"


def account_rows(accounts: list[dict[str, Any]]) -> list[str]:
    return render.table(["ACCOUNT", "SHARE", "QUOTA (GPUs)", "USERS", "COORDINATORS"],
                        [[a["name"], f"{a['share']:g}", quota_text(a), ",".join(a["users"]) or "-",
                          ",".join(a["coordinators"]) or "-"] for a in accounts])


@account.command("add")
@click.argument("name")
@click.option("--share", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Fair-share target, relative to the other accounts'.")
@click.option("--quota", type=click.IntRange(min=0),
              help="GPUs its jobs may hold at once (default: no quota).")
@click.option("--quota-model", "quota_models", multiple=True, callback=model_quotas, metavar="MODEL=GPUS",
              help="GPUs at once of one model (part of the GPU name), e.g. h100=4; repeatable.")
@json_option
@click.pass_obj
def account_add(client: Client, name: str, share: float, quota: int | None, quota_models: dict[str, int],
                as_json: bool) -> None:
    """Create account NAME."""
    data = client.post_json("/api/admin/accounts", {"name": name, "share": share, "quota": quota,
                                                    "quota_models": quota_models})
    if as_json:
        emit(data)
    else:
        click.echo("\n".join(account_rows([data])))


@account.command("set")
@click.argument("name")
@click.option("--share", type=click.FloatRange(min=0))
@click.option("--quota", type=click.IntRange(min=0))
@click.option("--no-quota", is_flag=True, help="Remove the GPU quota.")
@click.option("--quota-model", "quota_models", multiple=True, callback=model_quotas, metavar="MODEL=GPUS")
@click.pass_obj
def account_set(client: Client, name: str, share: float | None, quota: int | None, no_quota: bool,
                quota_models: dict[str, int]) -> None:
    """Change account NAME's share or quota."""
    body: dict[str, Any] = {} if share is None else {"share": share}
    if quota is not None or no_quota:
        body["quota"] = None if no_quota else quota
    if quota_models:
        body["quota_models"] = quota_models
    data = client.request("PATCH", f"/api/admin/accounts/{name}", json=body).json()
    click.echo("\n".join(account_rows([data])))


@account.command("list")
@json_option
@click.pass_obj
def account_list(client: Client, as_json: bool) -> None:
    """Every account."""
    data = client.get_json("/api/admin/accounts")
    if as_json:
        emit(data)
    else:
        click.echo("\n".join(account_rows(data["accounts"])))


@admin.group()
def user() -> None:
    """Users and the accounts they belong to."""


def user_rows(users: list[dict[str, Any]]) -> list[str]:
    return render.table(["USER", "DEFAULT ACCOUNT", "ACCOUNTS", "COORDINATES"],
                        [[u["name"], u["default_account"], ",".join(u["accounts"]),
                          ",".join(u["coordinator_of"]) or "-"] for u in users])


@user.command("add")
@click.argument("name")
@click.option("--account", "accounts", multiple=True, required=True,
              help="An account the user belongs to (repeatable; the first is the default).")
@click.option("--default-account", help="The account a job runs under when none is given.")
@click.option("--coordinator-of", multiple=True, help="An account whose jobs the user sees (repeatable).")
@click.pass_obj
def user_add(client: Client, name: str, accounts: tuple[str, ...], default_account: str | None,
             coordinator_of: tuple[str, ...]) -> None:
    """Create user NAME in one or more accounts."""
    body: dict[str, Any] = {"name": name, "accounts": list(accounts), "coordinator_of": list(coordinator_of)}
    if default_account:
        body["default_account"] = default_account
    click.echo("\n".join(user_rows([client.post_json("/api/admin/users", body)])))


@user.command("join")
@click.argument("name")
@click.argument("account")
@click.option("--coordinator", is_flag=True, help="And see the account's jobs.")
@click.pass_obj
def user_join(client: Client, name: str, account: str, coordinator: bool) -> None:
    """Put user NAME in ACCOUNT too."""
    data = client.post_json(f"/api/admin/users/{name}/accounts",
                            {"account": account, "coordinator": coordinator})
    click.echo("\n".join(user_rows([data])))


@user.command("list")
@json_option
@click.pass_obj
def user_list(client: Client, as_json: bool) -> None:
    """Every user."""
    data = client.get_json("/api/admin/users")
    if as_json:
        emit(data)
    else:
        click.echo("\n".join(user_rows(data["users"])))


@user.command("remove")
@click.argument("name")
@click.pass_obj
def user_remove(client: Client, name: str) -> None:
    """Remove user NAME and their tokens (their jobs stay)."""
    client.request("DELETE", f"/api/admin/users/{name}")
    click.echo(f"removed user {name}")


@admin.group()
def token() -> None:
    """API tokens: each identifies one user."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.pass_obj
def token_create(client: Client, user_name: str) -> None:
    """Create a token for USER and print it: it is shown this once (only its hash is kept)."""
    data = client.post_json("/api/admin/tokens", {"user": user_name})
    click.echo(f"token {data['key']} for {data['user']} (shown once; revoke with: "
               f"overlay admin token revoke {data['key']}):", err=True)
    click.echo(data["token"])


@token.command("list")
@click.option("--user", "user_name", help="Only this user's tokens.")
@click.pass_obj
def token_list(client: Client, user_name: str | None) -> None:
    """Tokens by key, owner and state (never the token itself)."""
    data = client.get_json("/api/admin/tokens", **({"user": user_name} if user_name else {}))
    click.echo("\n".join(render.table(
        ["KEY", "USER", "CREATED", "REVOKED"],
        [[t["key"], t["user"], t["created_at"], t["revoked_at"] or "-"] for t in data["tokens"]])))


@token.command("revoke")
@click.argument("key")
@click.pass_obj
def token_revoke(client: Client, key: str) -> None:
    """Revoke the token KEY (its key, as token list shows, or the token itself)."""
    key = key.split("_")[1] if key.startswith("ovl_") and key.count("_") >= 2 else key
    data = client.post_json(f"/api/admin/tokens/{key}/revoke")
    click.echo(f"revoked token {data['key']} of {data['user']}")
