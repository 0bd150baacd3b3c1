"""Options shared by several commands, each with its TAPEWIRE_* environment twin."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import platformdirs

from tapewire.capture.connect import DEFAULT_INTERCEPT
from tapewire.capture.tls import default_ca_dir
from tapewire.service import Settings
from tapewire.store import location
from tapewire.store.location import DbRef

F = TypeVar("F", bound=Callable[..., Any])


def default_db() -> Path:
    return Path(platformdirs.user_data_dir("tapewire")) / "tapewire.db"


def prices_option(f: F) -> F:
    return click.option(
        "--prices",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        envvar="TAPEWIRE_PRICES",
        help="A price table of your own (JSON, as src/tapewire/data/prices.json), over the bundled one.",
    )(f)


class DatabaseType(click.ParamType):  # type: ignore[type-arg]
    """A SQLite file's path or a PostgreSQL URL."""

    name = "PATH|URL"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> DbRef:
        db = location.parse(value)
        if isinstance(db, Path) and db.is_dir():
            self.fail(f"{db} is a directory, not a database file", param, ctx)
        return db


DATABASE = DatabaseType()


def database_option(f: F) -> F:
    return click.option(
        "--db",
        type=DATABASE,
        envvar="TAPEWIRE_DB",
        default=default_db,
        show_default="the user data directory",
        help="SQLite database file, or a PostgreSQL URL (postgresql://user:pass@host/db).",
    )(f)


def db_option(f: F) -> F:
    """--db and the journal beside it."""
    f = click.option(
        "--journal",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="TAPEWIRE_JOURNAL",
        help="Journal directory. Default: <db>.journal beside a SQLite file; for PostgreSQL, "
        "one per database in the user data directory.",
    )(f)
    return database_option(f)


def proxy_options(f: F) -> F:
    """What shapes a recorder: upstreams, redaction, credentials, caps."""
    options = [
        click.option(
            "--upstream",
            "upstreams",
            multiple=True,
            envvar="TAPEWIRE_UPSTREAM",
            metavar="NAME=URL",
            help="Where NAME's traffic goes (anthropic, openai, ollama or your own name for "
            "/u/NAME/). Repeatable. Default: the providers' public endpoints.",
        ),
        click.option(
            "--default-upstream",
            envvar="TAPEWIRE_DEFAULT_UPSTREAM",
            default="openai",
            show_default=True,
            help="Upstream for paths no provider claims.",
        ),
        click.option(
            "--no-redact",
            is_flag=True,
            envvar="TAPEWIRE_NO_REDACT",
            help="Store bodies whole, without replacing key-shaped secrets.",
        ),
        click.option(
            "--redact-pattern",
            "redact_patterns",
            multiple=True,
            envvar="TAPEWIRE_REDACT_PATTERN",
            metavar="REGEX",
            help="Also redact matches of REGEX (group 1 if it has one). Repeatable.",
        ),
        click.option(
            "--credential-header",
            "credential_headers",
            multiple=True,
            envvar="TAPEWIRE_CREDENTIAL_HEADER",
            metavar="NAME",
            help="Another header whose value is forwarded but never stored. Repeatable.",
        ),
        click.option(
            "--max-exchange-bytes",
            type=int,
            envvar="TAPEWIRE_MAX_EXCHANGE_BYTES",
            default=64 * 1024 * 1024,
            show_default=True,
            help="Per body: past this the exchange is still forwarded whole, but recorded truncated.",
        ),
        click.option(
            "--max-inflight-bytes",
            type=int,
            envvar="TAPEWIRE_MAX_INFLIGHT_BYTES",
            default=512 * 1024 * 1024,
            show_default=True,
            help="All exchanges in flight together: past this, bodies are recorded truncated.",
        ),
        click.option(
            "--fsync-interval",
            type=float,
            envvar="TAPEWIRE_FSYNC_INTERVAL",
            default=1.0,
            show_default=True,
            help="Seconds between journal fsyncs.",
        ),
        click.option(
            "--upstream-ca",
            type=click.Path(path_type=Path, dir_okay=False),
            envvar="TAPEWIRE_UPSTREAM_CA",
            metavar="FILE",
            help="Also trust these CA certificates (PEM) on the upstream side: a company's "
            "TLS gateway, a test provider.",
        ),
        click.option(
            "--read-timeout",
            type=float,
            envvar="TAPEWIRE_READ_TIMEOUT",
            default=600.0,
            show_default=True,
            help="Seconds to wait for the upstream's next bytes.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return prices_option(f)


def ca_dir_option(f: F) -> F:
    return click.option(
        "--ca-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="TAPEWIRE_CA_DIR",
        default=default_ca_dir,
        show_default="<user data directory>/ca",
        help="Where tapewire's local CA lives (made there on first use).",
    )(f)


def https_options(f: F) -> F:
    """The HTTPS proxy mode (docs/https-proxy.md)."""
    f = click.option(
        "--intercept",
        "intercept_hosts",
        multiple=True,
        envvar="TAPEWIRE_INTERCEPT",
        metavar="HOST",
        help="With --https-proxy: a host whose TLS tapewire terminates and records. "
        f"Repeatable; replaces the default list ({', '.join(DEFAULT_INTERCEPT)}).",
    )(f)
    f = click.option(
        "--https-proxy",
        is_flag=True,
        envvar="TAPEWIRE_HTTPS_PROXY",
        help="Also serve CONNECT: record the LLM API hosts' traffic (TLS terminated with a "
        "certificate of tapewire's local CA), tunnel every other host untouched.",
    )(f)
    return ca_dir_option(f)


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HOST:PORT") from None


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def settings_from(options: dict[str, Any]) -> Settings:
    """Settings from the values of `db_option` and `proxy_options`."""
    return Settings(
        db=options["db"],
        journal=options["journal"],
        upstreams=list(options["upstreams"]),
        default_upstream=options["default_upstream"],
        redact=not options["no_redact"],
        redact_patterns=list(options["redact_patterns"]),
        extra_credential_headers=list(options["credential_headers"]),
        exchange_cap=options["max_exchange_bytes"],
        inflight_cap=options["max_inflight_bytes"],
        fsync_interval=options["fsync_interval"],
        read_timeout=options["read_timeout"],
        prices=options.get("prices"),
        upstream_ca=options.get("upstream_ca"),
        https_proxy=bool(options.get("https_proxy")),
        intercept_hosts=list(options.get("intercept_hosts") or DEFAULT_INTERCEPT),
        ca_dir=options.get("ca_dir"),
    )
