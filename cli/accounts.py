"""The simulator's accounts: reading a shares file (each account's fair-share target and GPU
quota) and printing each account's GPU-hours against its share. Format in docs/simulate.md.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from overlay.errors import WorkloadError
from overlay.quota import Quota
from overlay.simulation import Sharing

NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
COLUMNS = ("account", "share", "quota")


def read_shares(path: Path) -> Sharing:
    """The accounts of a shares file: CSV with a header (account, share, quota) or a JSON
    list of objects with those keys. Raises WorkloadError naming each bad entry."""
    try:
        text = path.read_text()
        rows = _json_rows(text) if path.suffix.lower() == ".json" else _csv_rows(text)
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError, ValueError) as e:
        raise WorkloadError(path, [str(e)]) from e
    shares: dict[str, float] = {}
    quotas: dict[str, Quota] = {}
    errors: list[str] = []
    for where, row in rows:
        try:
            account, share, quota = _entry(row)
        except ValueError as e:
            errors.append(f"{where}: {e}")
            continue
        if account in shares or account in quotas:
            errors.append(f"{where}: account {account!r} appears twice")
        if share is not None:
            shares[account] = share
        if quota is not None:
            quotas[account] = quota
    if not errors and not rows:
        errors.append("no accounts")
    if errors:
        raise WorkloadError(path, errors)
    return Sharing(shares=shares, quotas=quotas)


def _csv_rows(text: str) -> list[tuple[str, dict[str, str]]]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines, skipinitialspace=True)
    unknown = [c for c in reader.fieldnames or () if c.strip().lower() not in COLUMNS]
    if unknown or "account" not in [c.strip().lower() for c in reader.fieldnames or ()]:
        raise ValueError(f"the header names account, and may name share and quota; got {reader.fieldnames}")
    return [(f"entry {n}", {k.strip().lower(): (v or "").strip() for k, v in row.items() if k})
            for n, row in enumerate(reader, start=1)]


def _json_rows(text: str) -> list[tuple[str, dict[str, Any]]]:
    data = json.loads(text)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("a JSON shares file is a list of objects with account, share and quota")
    return [(f"entry {n}", item) for n, item in enumerate(data, start=1)]


def _entry(row: dict[str, Any]) -> tuple[str, float | None, Quota | None]:
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(COLUMNS)})")
    account = str(row.get("account") or "")
    if not NAME.fullmatch(account):
        raise ValueError(f"account must be 1-128 of A-Z a-z 0-9 . _ -, got {account!r}")
    raw_share = row.get("share")
    share = None
    if raw_share not in (None, ""):
        try:
            share = float(raw_share)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            share = -1.0
        if not (math.isfinite(share) and share >= 0):
            raise ValueError(f"share must be a number >= 0, got {raw_share!r}")
    quota = row.get("quota")
    return account, share, None if quota in (None, "") else parse_quota(str(quota))


def parse_quota(text: str) -> Quota:
    """``8`` (GPUs of any model), ``h100=4`` (of a model), or both: ``8;h100=4``.
    Raises ValueError saying what is wrong."""
    total: int | None = None
    models: dict[str, int] = {}
    for part in (p.strip() for p in text.split(";") if p.strip()):
        model, _, count = part.rpartition("=")
        if not count.isdigit() or (model and not NAME.fullmatch(model)) or (not model and "=" in part):
            raise ValueError(f"quota must be GPUs, model=GPUs, or both split by ';', got {text!r}")
        if model:
            models[model.lower()] = int(count)
        else:
            total = int(count)
    return Quota(gpus=total, models=models)


# -- the report ---------------------------------------------------------------------------------

HEADER = ("policy", "account", "share", "quota", "jobs", "borrowed", "GPU-h", "of all", "contended")


def accounts_table(reports: Sequence[dict[str, Any]]) -> str:
    """Each policy's accounts: share, quota, jobs, GPU-hours and their part of all, and
    their part while every account had jobs waiting (what fair share answers for)."""
    rows = [list(HEADER)]
    for r in reports:
        total = sum(a["gpu_hours"] for a in r["accounts"]) or 1.0
        for a in r["accounts"]:
            rows.append([r["policy"], a["account"], "-" if a["share"] is None else f"{a['share']:.1%}",
                         "-" if a["quota"] is None else str(a["quota"]), f"{a['jobs']:,}",
                         f"{a['borrowed']:,}", f"{a['gpu_hours']:,.0f}", f"{a['gpu_hours'] / total:.1%}",
                         f"{a['contended_use']:.1%}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows)
