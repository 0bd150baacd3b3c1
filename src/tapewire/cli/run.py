"""`tapewire run -- COMMAND`: run an agent with its traffic recorded as one session, and the
context of the run (command, directory, git state, memory files) kept with it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from tapewire.capture.tls import CERT_FILE, default_ca_dir, write_trust_bundle
from tapewire.cli import codex
from tapewire.cli.options import db_option, https_options, proxy_options, settings_from
from tapewire.journal.segments import JournalLocked
from tapewire.model import new_id
from tapewire.service import ServiceThread, running_state

AGENTS = ("claude", "codex", "aider", "gemini")
MEMORY_FILES = (
    "CLAUDE.md",
    "CLAUDE.local.md",
    ".claude/CLAUDE.md",
    "AGENTS.md",
    "AGENTS.override.md",
    "GEMINI.md",
    "CONVENTIONS.md",
    ".cursorrules",
    ".github/copilot-instructions.md",
)
MEMORY_FILE_CAP = 64 * 1024
MEMORY_TOTAL_CAP = 256 * 1024


def agent_env(proxy_url: str, session: str) -> dict[str, str]:
    """Base URLs for every client we know, each pointing at the session's prefix."""
    base = f"{proxy_url}/s/{session}"
    return {
        "ANTHROPIC_BASE_URL": base,  # Claude Code, Anthropic SDKs
        "OPENAI_BASE_URL": f"{base}/v1",  # Codex, OpenAI SDKs
        "OPENAI_API_BASE": f"{base}/v1",  # aider / LiteLLM
        "ANTHROPIC_API_BASE": base,  # LiteLLM
        "OLLAMA_HOST": base,  # Ollama clients
        "OLLAMA_API_BASE": base,  # LiteLLM
        "GOOGLE_GEMINI_BASE_URL": base,  # Gemini CLI with an API key, google-genai SDKs
        "TAPEWIRE_SESSION": session,
    }


BUNDLE_FILE = "trust-bundle.pem"


def https_env(proxy_url: str, session: str, bundle: Path, ca_cert: Path,
              token: str | None) -> dict[str, str]:  # fmt: skip
    """For `run --https-proxy`: the proxy for every client that honours HTTPS_PROXY, and trust
    in tapewire's CA. The session rides in the proxy URL's user name (sent on each CONNECT as
    Proxy-Authorization), the token, if any, as its password."""
    scheme, _, address = proxy_url.partition("://")
    userinfo = quote(session, safe="") + (f":{quote(token, safe='')}" if token else "")
    proxy = f"{scheme}://{userinfo}@{address}"
    return {
        "HTTPS_PROXY": proxy,
        "https_proxy": proxy,  # curl reads only the lower-case one
        # Node adds these to its own root store: tapewire's CA alone is right.
        "NODE_EXTRA_CA_CERTS": str(ca_cert),
        # These replace the system's store for Python (ssl, httpx, requests) and curl: the
        # child must still reach every host tapewire only tunnels (GitHub, package indexes),
        # whose certificates the public CAs sign, so they get the system's CAs plus ours.
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),
        "TAPEWIRE_SESSION": session,
    }


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _strip_userinfo(url: str) -> str:
    """A remote URL may carry a token (https://user:token@host/...): keep only the place."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def git_state(cwd: Path) -> dict[str, Any] | None:
    top = _git(cwd, "rev-parse", "--show-toplevel")
    if not top:
        return None
    remote = _git(cwd, "remote", "get-url", "origin")
    porcelain = _git(cwd, "status", "--porcelain") or ""
    return {
        "root": top,
        "remote": _strip_userinfo(remote) if remote else None,
        "branch": _git(cwd, "rev-parse", "--abbrev-ref", "HEAD"),
        "head": _git(cwd, "rev-parse", "HEAD"),
        "changed_files": len([line for line in porcelain.splitlines() if line.strip()]),
    }


def memory_files(cwd: Path) -> list[dict[str, Any]]:
    found, budget = [], MEMORY_TOTAL_CAP
    for name in MEMORY_FILES:
        path = cwd / name
        if not path.is_file() or budget <= 0:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        keep = data[: min(MEMORY_FILE_CAP, budget)]
        budget -= len(keep)
        found.append(
            {
                "path": name,
                "size": len(data),
                "truncated": len(keep) < len(data),
                "content": keep.decode("utf-8", "replace"),
            }
        )
    return found


def detect_agent(command: tuple[str, ...], named: str | None) -> str | None:
    if named:
        return named
    exe = Path(command[0]).name
    return exe if exe in AGENTS else None


def agent_version(command: tuple[str, ...], agent: str | None) -> str | None:
    if agent is None or shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(
            [command[0], "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else None
    )


def post_context(proxy_url: str, session: str, context: dict[str, Any], token: str | None) -> None:
    req = urllib.request.Request(
        proxy_url + "/_tapewire/context",
        data=json.dumps({"session": session, "context": context}).encode(),
        headers={
            "Content-Type": "application/json",
            **({"x-tapewire-token": token} if token else {}),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5):
            pass
    except OSError as e:
        click.echo(f"tapewire: could not record the run context: {e}", err=True)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--agent",
    type=click.Choice(AGENTS),
    default=None,
    help="The agent being run (guessed from COMMAND when it is one of these).",
)
@click.option("--session", default=None, help="Session id to record under. Default: a new one.")
@click.option(
    "--proxy",
    "proxy_url",
    default=None,
    envvar="TAPEWIRE_PROXY",
    help="Use this running tapewire instead of finding or starting one.",
)
@click.option("--token", envvar="TAPEWIRE_TOKEN", default=None, hidden=True)
@db_option
@proxy_options
@https_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    agent: str | None,
    session: str | None,
    proxy_url: str | None,
    token: str | None,
    command: tuple[str, ...],
    **options: Any,
) -> None:
    """Run COMMAND with its LLM traffic recorded as one session.

    Uses the `tapewire serve` that owns the database's journal when one is running,
    else starts a proxy in this process for the run. Exits with COMMAND's exit code.

    With --https-proxy the child gets HTTPS_PROXY and tapewire's CA instead of base URLs,
    for agents that ignore base URLs (docs/https-proxy.md).
    """
    session = session or new_id()
    settings = settings_from(options)
    settings.port = 0
    # Where the proxy's CA certificate is: this run's own proxy and an explicit --proxy use
    # --ca-dir; a running `tapewire serve` says where its CA is.
    ca_cert = (settings.ca_dir or default_ca_dir()) / CERT_FILE
    thread: ServiceThread | None = None
    if proxy_url is None:
        state = running_state(settings.journal_dir)
        if state is not None:
            proxy_url = str(state["url"])
            if settings.https_proxy and not state.get("https_proxy"):
                raise click.ClickException(
                    f"the tapewire serve running on this database ({proxy_url}) does not serve "
                    "CONNECT: restart it with --https-proxy, or run without --https-proxy"
                )
            if state.get("ca"):
                ca_cert = Path(state["ca"])
        else:
            try:
                thread = ServiceThread(settings)
            except (JournalLocked, ValueError) as e:
                raise click.ClickException(str(e)) from None
            proxy_url = thread.__enter__().url
    try:
        given = None
        if settings.https_proxy:
            given = _https_env(proxy_url.rstrip("/"), session, ca_cert, token)
        code = _run_recorded(command, agent, session, proxy_url.rstrip("/"), token, given)
    finally:
        if thread is not None:
            thread.stop()
    click.echo(f"tapewire: session {session} recorded", err=True)
    sys.exit(code)


def _https_env(proxy_url: str, session: str, ca_cert: Path, token: str | None) -> dict[str, str]:
    """The child's HTTPS proxy environment, with its trust bundle written beside the CA; a CA
    certificate that is missing, unreadable or corrupt stops the run, naming the file."""
    bundle = ca_cert.parent / BUNDLE_FILE
    try:
        system = write_trust_bundle(ca_cert, bundle)
    except ValueError as e:  # CAError names the certificate
        raise click.ClickException(f"{e} (the child could not trust the HTTPS proxy)") from None
    except OSError as e:
        raise click.ClickException(f"cannot write the trust bundle {bundle}: {e}") from None
    if system is None:
        click.echo(
            f"tapewire: no system CA bundle found: {bundle} trusts tapewire's CA only, so the "
            "child reaches only the intercepted hosts over HTTPS",
            err=True,
        )
    return https_env(proxy_url, session, bundle, ca_cert, token)


def _run_recorded(
    command: tuple[str, ...],
    agent: str | None,
    session: str,
    proxy_url: str,
    token: str | None,
    given: dict[str, str] | None = None,
) -> int:
    cwd = Path.cwd()
    agent = detect_agent(command, agent)
    env = dict(os.environ)
    added: list[str] = []
    login = None
    if given is None:  # the base URL's way (the HTTPS proxy's needs no base URL)
        given = agent_env(proxy_url, session)
        if agent == "codex":  # its base URL depends on the login it has
            setup = codex.configure(command, env, f"{proxy_url}/s/{session}")
            given.update(setup.env)
            command, added, login = setup.command, setup.args, setup.login
    env.update(given)
    context: dict[str, Any] = {
        "command": list(command),
        "cwd": str(cwd),
        "agent": agent,
        "agent_version": agent_version(command, agent),
        "git": git_state(cwd),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "python": platform.python_version(),
        "env_names": sorted(env),
        "env_set_by_tapewire": sorted(given),
        "args_added_by_tapewire": added,
        "agent_login": login,
        "memory_files": memory_files(cwd),
        "started_at": time.time(),
        "proxy": proxy_url,
    }
    post_context(proxy_url, session, context, token)
    # The terminal's Ctrl-C reaches the agent (same process group); we wait for it to finish.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as e:
        signal.signal(signal.SIGINT, previous)
        context.update(ended_at=time.time(), exit_code=None, error=str(e))
        post_context(proxy_url, session, context, token)
        raise click.ClickException(f"cannot run {command[0]}: {e}") from None
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    context.update(ended_at=time.time(), exit_code=code)
    post_context(proxy_url, session, context, token)
    return code if code >= 0 else 128 - code
