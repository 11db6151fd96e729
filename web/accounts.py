"""/api/admin/accounts, /users, /tokens: who shares the cluster (admin only, web/auth.py)."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.exceptions import BadRequest

from overlay.store import accounts as store
from overlay.store.tables import ApiTokenRow
from web.deps import deps
from web.schemas import (
    AccountCreateSchema,
    AccountListSchema,
    AccountSchema,
    AccountUpdateSchema,
    MembershipSchema,
    TokenCreatedSchema,
    TokenCreateSchema,
    TokenListQuerySchema,
    TokenListSchema,
    TokenSchema,
    UserCreateSchema,
    UserListSchema,
    UserSchema,
)

blp = Blueprint("accounts", __name__, url_prefix="/api/admin",
                description="Accounts, users and tokens (admin)")
log = logging.getLogger(__name__)


def account_view(a: store.Account) -> dict[str, Any]:
    return {"name": a.name, "share": a.share, "quota": a.quota.gpus, "quota_models": dict(a.quota.models),
            "users": list(a.users), "coordinators": list(a.coordinators)}


def user_view(u: store.User) -> dict[str, Any]:
    return {"name": u.name, "default_account": u.default_account, "accounts": list(u.accounts),
            "coordinator_of": list(u.coordinates)}


def token_view(t: ApiTokenRow) -> dict[str, Any]:
    return {"key": t.key, "user": t.user_name, "created_at": t.created_at, "revoked_at": t.revoked_at}


def tokens_changed() -> None:
    """Requests without a token are judged again at once in this process (web/auth.py)."""
    current_app.extensions["overlay_tokens"].changed()


@blp.route("/accounts")
class Accounts(MethodView):
    @blp.response(200, AccountListSchema)
    def get(self) -> dict[str, Any]:
        """Every account with its share, quota, users and coordinators (admin)."""
        with deps().transaction() as s:
            return {"accounts": [account_view(a) for a in store.list_accounts(s)]}

    @blp.arguments(AccountCreateSchema)
    @blp.response(201, AccountSchema)
    @blp.alt_response(409, description="an account of this name exists")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an account: its fair-share ``share`` and GPU quota (admin)."""
        svc = deps()
        with svc.transaction() as s:
            account = store.add_account(s, body["name"], share=body["share"], quota_gpus=body["quota"],
                                        quota_models=body["quota_models"], now=svc.clock())
        log.info("account %s created: share %s, quota %s", account.name, account.share, account.quota)
        return account_view(account)


@blp.route("/accounts/<name>")
class AccountByName(MethodView):
    @blp.response(200, AccountSchema)
    def get(self, name: str) -> dict[str, Any]:
        """One account (admin)."""
        with deps().transaction() as s:
            return account_view(store.get_account(s, name))

    @blp.arguments(AccountUpdateSchema)
    @blp.response(200, AccountSchema)
    def patch(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """Change an account's share or quota (admin); the next pass applies it."""
        if not request.get_data():
            raise BadRequest("the body is missing: a JSON object of share, quota, quota_models")
        changes = {{"quota": "quota_gpus"}.get(k, k): v for k, v in body.items()}
        svc = deps()
        with svc.transaction() as s:
            account = store.update_account(s, name, **changes)
        svc.dispatcher.schedule()
        return account_view(account)


@blp.route("/users")
class Users(MethodView):
    @blp.response(200, UserListSchema)
    def get(self) -> dict[str, Any]:
        """Every user with their accounts (admin)."""
        with deps().transaction() as s:
            return {"users": [user_view(u) for u in store.list_users(s)]}

    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(404, description="an account named does not exist")
    @blp.alt_response(409, description="a user of this name exists")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a user in one or more accounts (admin)."""
        svc = deps()
        with svc.transaction() as s:
            user = store.add_user(s, body["name"], accounts=body["accounts"],
                                  default_account=body.get("default_account"),
                                  coordinates=body["coordinator_of"], now=svc.clock())
        log.info("user %s created in %s", user.name, ", ".join(user.accounts))
        return user_view(user)


@blp.route("/users/<name>")
class UserByName(MethodView):
    @blp.response(200, UserSchema)
    def get(self, name: str) -> dict[str, Any]:
        """One user (admin)."""
        with deps().transaction() as s:
            return user_view(store.get_user(s, name))

    @blp.response(204)
    def delete(self, name: str) -> None:
        """Remove a user and their tokens; their jobs stay (admin)."""
        with deps().transaction() as s:
            store.delete_user(s, name)
        tokens_changed()


@blp.route("/users/<name>/accounts")
class UserAccounts(MethodView):
    @blp.arguments(MembershipSchema)
    @blp.response(200, UserSchema)
    def post(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """Add a user to an account, or make them its coordinator (admin)."""
        with deps().transaction() as s:
            return user_view(store.join(s, name, body["account"], coordinator=body["coordinator"]))


@blp.route("/tokens")
class Tokens(MethodView):
    @blp.arguments(TokenListQuerySchema, location="query")
    @blp.response(200, TokenListSchema)
    def get(self, query: dict[str, str]) -> dict[str, Any]:
        """Tokens by key and owner, never their secret (admin)."""
        with deps().transaction() as s:
            return {"tokens": [token_view(t) for t in store.list_tokens(s, query.get("user"))]}

    @blp.arguments(TokenCreateSchema)
    @blp.response(201, TokenCreatedSchema)
    @blp.alt_response(404, description="no such user")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a token for a user; the answer is the only time it is shown (admin)."""
        svc = deps()
        with svc.transaction() as s:
            key, token = store.create_token(s, body["user"], now=svc.clock())
            row = store.list_tokens(s, body["user"])
        tokens_changed()
        log.info("token %s created for user %s", key, body["user"])
        return {**token_view(next(t for t in row if t.key == key)), "token": token}


@blp.route("/tokens/<key>/revoke")
class TokenRevoke(MethodView):
    @blp.response(200, TokenSchema)
    def post(self, key: str) -> dict[str, Any]:
        """Revoke a token by its key: it is refused from the next request on (admin)."""
        svc = deps()
        with svc.transaction() as s:
            row = store.revoke_token(s, key, now=svc.clock())
            view = token_view(row)
        tokens_changed()
        log.info("token %s of user %s revoked", row.key, row.user_name)
        return view
