"""The options every client subcommand shares (``--api``, ``--api-key``) and its ``Client``.

The key comes from ``--api-key`` or, when that is absent, from ``HOTPIPE_API_KEY``, read
when the command runs (never at import).  It is only ever put in the ``Authorization``
header: never printed, never logged.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built for every subcommand; httpx only for those that call the API
    from hotpipe.producer.client import APIError, Client

API_URL_ENV = "HOTPIPE_API_URL"
API_KEY_ENV = "HOTPIPE_API_KEY"
DEFAULT_API = "http://127.0.0.1:8000"
#: what a refused (401) command adds to the API's message
KEY_HINT = f"pass --api-key KEY or set {API_KEY_ENV}"


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """``--api`` (default ``$HOTPIPE_API_URL``) and ``--api-key`` (default ``$HOTPIPE_API_KEY``)."""
    parser.add_argument("--api", default=os.environ.get(API_URL_ENV, DEFAULT_API),
                        help=f"the API's base URL (default: ${API_URL_ENV} or {DEFAULT_API})")
    parser.add_argument("--api-key", metavar="KEY",
                        help=f"API key, sent as Authorization: Bearer (default: ${API_KEY_ENV})")


def api_key(args: argparse.Namespace) -> str | None:
    """The key to send: the flag, else the environment variable, else none."""
    return getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV) or None


def client_for(args: argparse.Namespace) -> Client:
    """A ``Client`` on ``--api`` authenticated with the key ``api_key`` finds."""
    from hotpipe.producer.client import Client

    return Client(args.api, api_key=api_key(args))


def describe(exc: APIError) -> str:
    """One line for an API error: its message, code and field; a 401 says how to send a key."""
    line = f"{exc.message} ({exc.code}{', field ' + exc.field if exc.field else ''})"
    return f"{line}; {KEY_HINT}" if exc.status == 401 else line
