"""How `tapewire run --agent codex` points Codex at the proxy, for the login Codex has.

Codex's built-in `openai` provider sends the Responses API to its base URL: `OPENAI_BASE_URL`
(or the `openai_base_url` config key in newer versions) when set, else
`https://chatgpt.com/backend-api/codex` for a ChatGPT login and `https://api.openai.com/v1` for
an API key. A ChatGPT login's tokens are only good at the ChatGPT backend, so the base URL has to
keep the backend's path: tapewire routes `/backend-api/...` to its `chatgpt` upstream. Codex's
other ChatGPT calls (usage limits, cloud tasks, connectors) go to `chatgpt_base_url` (default
`https://chatgpt.com/backend-api/`), pointed at the proxy as well so that they are recorded too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CodexSetup:
    login: str | None  # "chatgpt", "apikey", or None when no auth.json says
    env: dict[str, str]
    command: tuple[str, ...]
    args: list[str] = field(default_factory=list)  # what was added to the command line


def codex_home(env: dict[str, str]) -> Path:
    """$CODEX_HOME, else ~/.codex (HOME as the child will see it)."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".codex"


def codex_login(home: Path) -> str | None:
    """The login auth.json holds: its `auth_mode` where written, else what it carries (an API
    key, or ChatGPT tokens), as Codex itself infers it for older files."""
    try:
        auth: Any = json.loads((home / "auth.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(auth, dict):
        return None
    mode = auth.get("auth_mode")
    if isinstance(mode, str) and mode:
        return "chatgpt" if mode.lower().startswith("chatgpt") else mode.lower()
    if isinstance(auth.get("OPENAI_API_KEY"), str) and auth["OPENAI_API_KEY"].strip():
        return "apikey"
    if isinstance(auth.get("tokens"), dict):
        return "chatgpt"
    return None


def configure(command: tuple[str, ...], env: dict[str, str], base: str) -> CodexSetup:
    """The environment and command line that send Codex through `base` (the proxy with the
    session's prefix). `-c` overrides are added only when the command is `codex` itself (not,
    say, `npx codex`, whose own arguments they would become)."""
    login = codex_login(codex_home(env))
    if login == "chatgpt":
        api = f"{base}/backend-api/codex"
        config = {"openai_base_url": api, "chatgpt_base_url": f"{base}/backend-api/"}
    else:
        api = f"{base}/v1"
        config = {"openai_base_url": api}
    args: list[str] = []
    if Path(command[0]).name in ("codex", "codex.exe"):
        for key, value in config.items():
            args += ["-c", f"{key}={json.dumps(value)}"]  # a TOML string, quoted
    return CodexSetup(login, {"OPENAI_BASE_URL": api}, (command[0], *args, *command[1:]), args)
