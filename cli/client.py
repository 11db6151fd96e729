"""The CLI's HTTP client: overlay's API over requests, with errors a person can act on.

Imports nothing of the server (no flask, celery or sqlalchemy): a CLI process must
start in a blink.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any

import click
import requests

DEFAULT_API = "http://localhost:8000"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
# A GET refused with 429 (the API's long-poll slots are all taken) is asked again after
# its Retry-After, this many times at most; a Retry-After above the cap is cut to it.
BUSY_RETRIES = 600
MAX_RETRY_AFTER_S = 30.0


class CliError(click.ClickException):
    """One line saying what went wrong (plus detail lines), and the exit status to leave with."""

    def __init__(self, message: str, *, details: Iterable[str] = (), exit_code: int = 1) -> None:
        super().__init__(message)
        self.details = list(details)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"overlay: {self.message}", err=True)
        for line in self.details:
            click.echo(f"  {line}", err=True)


def normalize(api: str) -> str:
    """``localhost:8000/`` -> ``http://localhost:8000``."""
    api = api.strip().rstrip("/")
    return api if "://" in api else f"http://{api}"


class Client:
    """GET and POST JSON against the API at ``base``, sending ``token`` as a bearer token."""

    def __init__(self, base: str, *, token: str = "") -> None:
        self.base = normalize(base)
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, *, params: Mapping[str, Any] | None = None, read_timeout: float = READ_TIMEOUT_S
            ) -> requests.Response:
        return self.request("GET", path, params=params, read_timeout=read_timeout)

    def get_json(self, path: str, **params: Any) -> Any:
        return self.get(path, params=params or None).json()

    def post_json(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body).json()

    def request(self, method: str, path: str, *, read_timeout: float = READ_TIMEOUT_S,
                **kwargs: Any) -> requests.Response:
        """The response to a 2xx; raise CliError (exit 2: unreachable, exit 1: the API said no).

        A GET answered 429 (every long-poll slot taken) is asked again after its Retry-After.
        """
        for _ in range(BUSY_RETRIES):
            response = self._send(method, path, read_timeout=read_timeout, **kwargs)
            if response.status_code != 429 or method != "GET":
                break
            # A kept-alive connection would bring the retry back to the same full API worker
            # (gunicorn's workers each accept their own); a new one may reach one with room.
            self.session.close()
            time.sleep(retry_after(response))
        if response.status_code >= 400:
            raise refused(response)
        return response

    def _send(self, method: str, path: str, *, read_timeout: float, **kwargs: Any) -> requests.Response:
        url = f"{self.base}{path}"
        try:
            response = self.session.request(method, url, timeout=(CONNECT_TIMEOUT_S, read_timeout), **kwargs)
        except requests.exceptions.ReadTimeout as e:
            raise CliError(f"the overlay API at {self.base} did not answer within {read_timeout:g}s",
                           exit_code=2) from e
        except (requests.ConnectionError, requests.exceptions.InvalidURL) as e:
            raise CliError(f"cannot reach the overlay API at {self.base}: {why(e)}", exit_code=2) from e
        except requests.exceptions.RequestException as e:
            raise CliError(f"cannot use the overlay API at {self.base}: {e}", exit_code=2) from e
        return response


def retry_after(response: requests.Response) -> float:
    """Seconds the API asked to wait (Retry-After), within [0.1, MAX_RETRY_AFTER_S]."""
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), MAX_RETRY_AFTER_S)


def refused(response: requests.Response) -> CliError:
    """The API's own words for a 4xx/5xx: its message, and one line per field error."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "message" not in body:
        text = " ".join(response.text.split())[:200]
        status = f"{response.status_code} {response.reason}"
        return CliError(f"the API answered {status}" + (f": {text}" if text else ""))
    status = f"{response.status_code} {body.get('status') or response.reason}"
    fields = {k: v for k, v in (body.get("errors") or {}).items() if isinstance(v, list)}
    if fields:
        lines = [f"{name}: {' '.join(map(str, msgs))}" for name, msgs in fields.items()]
        return CliError(f"the API refused the request ({status}):", details=lines)
    return CliError(f"{body['message'] or 'no message'} ({status})")


def why(error: BaseException) -> str:
    """The root cause of a connection failure in a few words (``connection refused``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    last: BaseException = error
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        last = e
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"unknown host ({e.strerror or e})"
        if isinstance(e, TimeoutError):
            return "timed out"
        if isinstance(e, OSError) and e.strerror:
            return e.strerror.lower()
        linked = [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
        todo.extend(x for x in linked if isinstance(x, BaseException))
    return str(last)
