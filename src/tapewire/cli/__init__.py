"""The command line: one module per command group, all under the `tapewire` group."""

from __future__ import annotations

import click

from tapewire import __version__
from tapewire.cli.admin import copy, delete, migrate, prune
from tapewire.cli.analyze import analyze, drift
from tapewire.cli.ca import ca
from tapewire.cli.demo import demo
from tapewire.cli.diff import diff
from tapewire.cli.exchanges import exchanges
from tapewire.cli.export import export
from tapewire.cli.fork import fork
from tapewire.cli.importing import import_
from tapewire.cli.repair import rederive, verify
from tapewire.cli.replay import replay
from tapewire.cli.run import run
from tapewire.cli.search import search
from tapewire.cli.serve import serve
from tapewire.cli.sessions import sessions, show
from tapewire.cli.status import status
from tapewire.cli.tools import tools
from tapewire.cli.ui import ui


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tapewire")
def main() -> None:
    """tapewire: a flight recorder for AI agents.

    Point an agent's base URL at `tapewire serve` (or start it with `tapewire run -- AGENT`)
    and every request, response, tool call and tool result is recorded, byte-exact.
    """


main.add_command(serve)
main.add_command(run)
main.add_command(status)
main.add_command(exchanges)
main.add_command(sessions)
main.add_command(show)
main.add_command(rederive)
main.add_command(verify)
main.add_command(search)
main.add_command(diff)
main.add_command(tools)
main.add_command(export)
main.add_command(ui)
main.add_command(demo)
main.add_command(analyze)
main.add_command(drift)
main.add_command(replay)
main.add_command(fork)
main.add_command(import_)
main.add_command(migrate)
main.add_command(copy)
main.add_command(prune)
main.add_command(delete)
main.add_command(ca)
