"""Accounts, users, their memberships and API tokens (stored as SHA-256 hashes only)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from overlay.errors import AccountNotFound, AlreadyExists, NotAMember, TokenNotFound, UserNotFound
from overlay.identity import Caller
from overlay.quota import Quota
from overlay.store.session import resolve_now
from overlay.store.tables import AccountRow, ApiTokenRow, MembershipRow, UserRow

TOKEN_PREFIX = "ovl"


@dataclass(frozen=True, kw_only=True)
class Account:
    name: str
    share: float
    quota: Quota
    users: tuple[str, ...] = ()
    coordinators: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class User:
    name: str
    default_account: str
    accounts: tuple[str, ...]
    coordinates: tuple[str, ...] = ()


# -- accounts ------------------------------------------------------------------------------------

def add_account(session: Session, name: str, *, share: float = 1.0, quota_gpus: int | None = None,
                quota_models: dict[str, int] | None = None, now: datetime | None = None) -> Account:
    """Create an account; raise AlreadyExists."""
    if session.get(AccountRow, name) is not None:
        raise AlreadyExists("account", name)
    session.add(AccountRow(name=name, share=share, quota_gpus=quota_gpus,
                           quota_models=dict(quota_models or {}), created_at=resolve_now(session, now)))
    session.flush()
    return get_account(session, name)


def update_account(session: Session, name: str, **changes: Any) -> Account:
    """Change an account's ``share``, ``quota_gpus`` or ``quota_models``; raise AccountNotFound."""
    row = _account_row(session, name)
    for key, value in changes.items():
        setattr(row, key, value)
    session.flush()
    return get_account(session, name)


def get_account(session: Session, name: str) -> Account:
    row = _account_row(session, name)
    members = session.execute(select(MembershipRow.user_name, MembershipRow.coordinator)
                              .where(MembershipRow.account == name).order_by(MembershipRow.user_name)).all()
    return _account(row, members)


def list_accounts(session: Session) -> list[Account]:
    members: dict[str, list[Any]] = {}
    for m in session.scalars(select(MembershipRow).order_by(MembershipRow.user_name)):
        members.setdefault(m.account, []).append((m.user_name, m.coordinator))
    rows = session.scalars(select(AccountRow).order_by(AccountRow.name))
    return [_account(r, members.get(r.name, [])) for r in rows]


# Every account's share and quota, as plain rows (a pass reads this every time).
QUOTAS_AND_SHARES = select(AccountRow.name, AccountRow.share, AccountRow.quota_gpus, AccountRow.quota_models)


def quotas_and_shares(session: Session) -> tuple[dict[str, Quota], dict[str, float]]:
    """Every account's quota (those that have one) and fair-share ``share``."""
    quotas: dict[str, Quota] = {}
    shares: dict[str, float] = {}
    for row in session.connection().execute(QUOTAS_AND_SHARES):
        shares[row.name] = row.share
        if row.quota_gpus is not None or row.quota_models:
            quotas[row.name] = _quota(row)
    return quotas, shares


def _quota(row: Any) -> Quota:
    """An account's quota, from its row (the ORM's or a plain one)."""
    return Quota(gpus=row.quota_gpus, models={k: int(v) for k, v in row.quota_models.items()})


def _account(row: AccountRow, members: Any) -> Account:
    return Account(name=row.name, share=row.share, quota=_quota(row),
                   users=tuple(u for u, _ in members), coordinators=tuple(u for u, c in members if c))


def _account_row(session: Session, name: str) -> AccountRow:
    row = session.get(AccountRow, name)
    if row is None:
        raise AccountNotFound(name)
    return row


# -- users ---------------------------------------------------------------------------------------

def add_user(session: Session, name: str, *, accounts: Sequence[str], default_account: str | None = None,
             coordinates: Sequence[str] = (), now: datetime | None = None) -> User:
    """Create a user in ``accounts`` (the first is the default unless given), coordinator of
    ``coordinates`` (which they join too). Raises AlreadyExists, AccountNotFound, NotAMember
    (a default account they are not in)."""
    if session.get(UserRow, name) is not None:
        raise AlreadyExists("user", name)
    joined = list(dict.fromkeys([*accounts, *coordinates]))
    if not joined:
        raise AccountNotFound("")
    for account in joined:
        _account_row(session, account)
    default = default_account or joined[0]
    if default not in joined:
        raise NotAMember(user=name, account=default, accounts=joined)
    session.add(UserRow(name=name, default_account=default, created_at=resolve_now(session, now)))
    session.flush()
    for account in joined:
        session.add(MembershipRow(user_name=name, account=account, coordinator=account in coordinates))
    session.flush()
    return get_user(session, name)


def join(session: Session, name: str, account: str, *, coordinator: bool = False) -> User:
    """Put a user in one more account (or make them its coordinator)."""
    _user_row(session, name)
    _account_row(session, account)
    row = session.get(MembershipRow, (name, account))
    if row is None:
        session.add(MembershipRow(user_name=name, account=account, coordinator=coordinator))
    else:
        row.coordinator = coordinator
    session.flush()
    return get_user(session, name)


def delete_user(session: Session, name: str) -> None:
    """Remove a user, their memberships and tokens; their jobs stay. Raises UserNotFound."""
    session.delete(_user_row(session, name))


def get_user(session: Session, name: str) -> User:
    row = _user_row(session, name)
    members = session.execute(select(MembershipRow.account, MembershipRow.coordinator)
                              .where(MembershipRow.user_name == name).order_by(MembershipRow.account)).all()
    return User(name=name, default_account=row.default_account, accounts=tuple(a for a, _ in members),
                coordinates=tuple(a for a, c in members if c))


def list_users(session: Session) -> list[User]:
    return [get_user(session, n) for n in session.scalars(select(UserRow.name).order_by(UserRow.name))]


def _user_row(session: Session, name: str) -> UserRow:
    row = session.get(UserRow, name)
    if row is None:
        raise UserNotFound(name)
    return row


# -- tokens --------------------------------------------------------------------------------------

def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: str, *, now: datetime | None = None) -> tuple[str, str]:
    """A new API token for ``user``: (its key, the token). The token is returned this once;
    only its hash is stored. Raises UserNotFound."""
    _user_row(session, user)
    key = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}_{key}_{secrets.token_urlsafe(32)}"
    session.add(ApiTokenRow(key=key, user_name=user, token_sha256=_digest(token),
                            created_at=resolve_now(session, now)))
    session.flush()
    return key, token


def list_tokens(session: Session, user: str | None = None) -> list[ApiTokenRow]:
    """Tokens (keys, owners, times: never a secret), of one user if given."""
    stmt = select(ApiTokenRow).order_by(ApiTokenRow.created_at)
    if user is not None:
        stmt = stmt.where(ApiTokenRow.user_name == user)
    return list(session.scalars(stmt))


def revoke_token(session: Session, key: str, *, now: datetime | None = None) -> ApiTokenRow:
    """Revoke a token by its key (the token itself works too); raise TokenNotFound."""
    key = token_key(key) or key
    row = session.get(ApiTokenRow, key)
    if row is None:
        raise TokenNotFound(key)
    if row.revoked_at is None:
        row.revoked_at = resolve_now(session, now)
    session.flush()
    return row


def revoke_user_tokens(session: Session, user: str, *, now: datetime | None = None) -> int:
    """Revoke every live token of ``user``; how many."""
    _user_row(session, user)
    result = session.execute(update(ApiTokenRow).where(ApiTokenRow.user_name == user,
                                                       ApiTokenRow.revoked_at.is_(None))
                             .values(revoked_at=resolve_now(session, now)))
    return int(result.rowcount)  # type: ignore[attr-defined]


def token_key(token: str) -> str | None:
    """The public key of a token of ours (``ovl_<key>_<secret>``), or None."""
    prefix, _, rest = token.partition("_")
    key, sep, secret = rest.partition("_")
    return key if prefix == TOKEN_PREFIX and sep and key and secret else None


def caller_for_token(session: Session, token: str) -> Caller | None:
    """The user a live token belongs to, or None (unknown, wrong or revoked). The hash is
    compared in constant time."""
    key = token_key(token)
    if key is None:
        return None
    row = session.get(ApiTokenRow, key)
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, _digest(token)):
        return None
    user = get_user(session, row.user_name)
    return Caller(user=user.name, default_account=user.default_account, accounts=frozenset(user.accounts),
                  coordinates=frozenset(user.coordinates))


def any_live_token(session: Session) -> bool:
    """Whether some user has a live token: then every request must carry one."""
    return bool(session.scalar(select(exists().where(ApiTokenRow.revoked_at.is_(None)))))


def count_users(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(UserRow)) or 0)
