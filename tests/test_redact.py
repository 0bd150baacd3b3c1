"""Tests for tapewire.redact; run this file directly to print timings."""

from __future__ import annotations

import base64
import json
import random
import string
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

try:
    from tapewire.redact import DEFAULT_RULES, Redactor
except ModuleNotFoundError:  # not installed: fall back to the src layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tapewire.redact import DEFAULT_RULES, Redactor

# Fake keys are assembled at run time from pieces so this file holds no key-shaped literal.
B62 = string.ascii_letters + string.digits
B64URL = B62 + "-_"
UPPER36 = string.ascii_uppercase + string.digits
DIGITS = string.digits
HEX = "0123456789abcdef"
OPENAI_MARK = "T3Blbk" + "FJ"


def rand(alphabet: str, n: int, salt: str = "") -> str:
    rng = random.Random(f"{alphabet}|{n}|{salt}")
    return "".join(rng.choice(alphabet) for _ in range(n))


def pem(label: str, n_bytes: int = 1190, *, headers: str = "", salt: str = "") -> str:
    body = base64.b64encode(random.Random(label + salt).randbytes(n_bytes)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    dashes = "-" * 5
    begin = f"{dashes}BEGIN {label}{dashes}"
    end = f"{dashes}END {label}{dashes}"
    return "\n".join([begin, *([headers] if headers else []), *lines, end])


# (rule that must fire, builder); builders run inside the tests.
KEY_EXAMPLES: list[tuple[str, str, Callable[[], str]]] = [
    ("anthropic-api", "anthropic-key", lambda: "sk-ant-" + "api03-" + rand(B64URL, 93) + "AA"),
    ("anthropic-admin", "anthropic-key", lambda: "sk-ant-" + "admin01-" + rand(B64URL, 93) + "AA"),
    ("anthropic-oauth", "anthropic-key", lambda: "sk-ant-" + "oat01-" + rand(B64URL, 95, "o")),
    (
        "openai-project",
        "openai-key",
        lambda: "sk-" + "proj-" + rand(B64URL, 74) + OPENAI_MARK + rand(B64URL, 74, "b"),
    ),
    (
        "openai-svcacct",
        "openai-key",
        lambda: "sk-" + "svcacct-" + rand(B64URL, 74, "s") + OPENAI_MARK + rand(B64URL, 74),
    ),
    (
        "openai-admin",
        "openai-key",
        lambda: "sk-" + "admin-" + rand(B64URL, 58) + OPENAI_MARK + rand(B64URL, 58, "a"),
    ),
    ("openai-project-no-mark", "openai-key", lambda: "sk-" + "proj-" + rand(B64URL, 156, "n")),
    ("openai-legacy-48", "openai-key", lambda: "sk-" + rand(B62, 48)),
    (
        "openai-legacy-marked",
        "openai-key",
        lambda: "sk-" + rand(B62, 20) + OPENAI_MARK + rand(B62, 20, "m"),
    ),
    (
        "openai-named-project",
        "openai-key",
        lambda: "sk-" + "myproject-" + rand(B62, 20) + OPENAI_MARK + rand(B62, 20, "p"),
    ),
    ("aws-akia", "aws-access-key-id", lambda: "AK" + "IA" + rand(UPPER36, 16)),
    ("aws-asia", "aws-access-key-id", lambda: "AS" + "IA" + rand(UPPER36, 16, "x")),
    ("github-ghp", "github-token", lambda: "gh" + "p_" + rand(B62, 36)),
    ("github-gho", "github-token", lambda: "gh" + "o_" + rand(B62, 36, "o")),
    ("github-ghu", "github-token", lambda: "gh" + "u_" + rand(B62, 36, "u")),
    ("github-ghs", "github-token", lambda: "gh" + "s_" + rand(B62, 36, "s")),
    ("github-ghr", "github-token", lambda: "gh" + "r_" + rand(B62, 76, "r")),
    (
        "github-fine-grained",
        "github-token",
        lambda: "github_" + "pat_" + rand(B62, 22) + "_" + rand(B62, 59),
    ),
    (
        "slack-bot",
        "slack-token",
        lambda: "xox" + "b-" + rand(DIGITS, 12) + "-" + rand(DIGITS, 13) + "-" + rand(B62, 24),
    ),
    (
        "slack-user",
        "slack-token",
        lambda: "xox" + "p-" + "-".join(rand(DIGITS, 12, s) for s in "abc") + "-" + rand(HEX, 32),
    ),
    ("slack-app", "slack-token", lambda: "xox" + "a-2-" + rand(B62, 40, "a")),
    ("slack-refresh", "slack-token", lambda: "xox" + "r-" + rand(DIGITS, 10) + "-" + rand(B62, 30)),
    ("slack-legacy", "slack-token", lambda: "xox" + "s-" + rand(DIGITS, 11) + "-" + rand(HEX, 40)),
    (
        "slack-webhook",
        "slack-webhook",
        lambda: (
            "https://hooks.slack.com/" + "services/T"
            f"{rand(UPPER36, 8)}/B{rand(UPPER36, 10)}/{rand(B62, 24)}"
        ),
    ),
    ("pem-rsa", "private-key", lambda: pem("RSA PRIVATE KEY")),
    ("pem-pkcs8", "private-key", lambda: pem("PRIVATE KEY")),
    ("pem-ec", "private-key", lambda: pem("EC PRIVATE KEY", 121)),
    ("pem-openssh", "private-key", lambda: pem("OPENSSH PRIVATE KEY", 400)),
    ("pem-encrypted", "private-key", lambda: pem("ENCRYPTED PRIVATE KEY")),
    (
        "pem-legacy-encrypted",
        "private-key",
        lambda: pem(
            "RSA PRIVATE KEY",
            headers="Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC," + rand("0123456789ABCDEF", 32),
        ),
    ),
    ("pem-pgp", "private-key", lambda: pem("PGP PRIVATE KEY BLOCK", headers="")),
]

# How a secret typically sits inside a JSON string.
CONTEXTS = [
    "{}",
    "Here is the key: {} -- does it work?",
    'export SECRET="{}"\necho done',
    "line one\n{}\nline three",
    "Authorization: Bearer {}",
    "curl -H 'x-api-key: {}' https://example.invalid/v1",
    "see https://example.invalid/?token={}&x=1",
]


def messages_body(*texts: str) -> bytes:
    return json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": t} for t in texts],
        }
    ).encode()


def contents(body: bytes) -> list[str]:
    parsed = json.loads(body)
    return [m["content"] for m in parsed["messages"]]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize(
    ("rule", "make"), [(r, m) for _, r, m in KEY_EXAMPLES], ids=[i for i, _, _ in KEY_EXAMPLES]
)
def test_default_rule_redacts_inside_json(rule: str, make: Callable[[], str], context: str) -> None:
    secret = make()
    text = context.format(secret)
    body = messages_body(text)

    out, count = Redactor().redact(body)

    assert count == 1
    (got,) = contents(out)
    # The webhook rule is anchored after the scheme, which is not secret.
    kept = "https://" if rule == "slack-webhook" else ""
    assert got == context.format(f"{kept}[REDACTED:{rule}]")
    assert secret.encode() not in out
    # The raw (unescaped) form redacts the same way.
    raw_out, raw_count = Redactor().redact(text.encode())
    assert raw_count == 1
    assert raw_out.decode() == got


def test_every_default_rule_is_exercised_and_anchored() -> None:
    names = [r.name for r in DEFAULT_RULES]
    assert len(names) == len(set(names))
    assert all(r.anchors for r in DEFAULT_RULES)
    exercised = {rule for _, rule, _ in KEY_EXAMPLES} | {"aws-secret-key"}
    assert exercised == set(names)


AWS_SECRET = "wJalr" + rand(B62 + "+/", 35)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n", "AWS_SECRET_ACCESS_KEY="),
        (f'export AWS_SECRET_ACCESS_KEY="{AWS_SECRET}"', 'export AWS_SECRET_ACCESS_KEY="'),
        (
            f"[default]\naws_secret_access_key = {AWS_SECRET}\n",
            "[default]\naws_secret_access_key = ",
        ),
        (f"aws_secret_access_key: {AWS_SECRET}", "aws_secret_access_key: "),
        (f"aws_secret_access_key => '{AWS_SECRET}'", "aws_secret_access_key => '"),
        (json.dumps({"SecretAccessKey": AWS_SECRET}), '{"SecretAccessKey": "'),
    ],
)
def test_aws_secret_key_keeps_the_name(text: str, expected: str) -> None:
    out, count = Redactor().redact(messages_body(text))
    assert count == 1
    (got,) = contents(out)
    assert got.startswith(expected + "[REDACTED:aws-secret-key]")
    assert AWS_SECRET not in got


def test_aws_secret_needs_exactly_40_chars() -> None:
    for value in (AWS_SECRET[:39], AWS_SECRET + "x"):
        data = f"AWS_SECRET_ACCESS_KEY={value}\n".encode()
        assert Redactor().redact(data) == (data, 0)


def env_file() -> tuple[str, list[str]]:
    secrets = [
        "sk-ant-" + "api03-" + rand(B64URL, 93, "env") + "AA",
        "sk-" + "proj-" + rand(B64URL, 74, "env") + OPENAI_MARK + rand(B64URL, 74, "env2"),
        "AK" + "IA" + rand(UPPER36, 16, "env"),
        rand(B62 + "+/", 40, "env"),
        "gh" + "p_" + rand(B62, 36, "env"),
        "xox" + "b-" + rand(DIGITS, 12, "e") + "-" + rand(DIGITS, 13, "e") + "-" + rand(B62, 24),
        "https://hooks.slack.com/"
        + f"services/T0{rand(UPPER36, 8, 'e')}/B0{rand(UPPER36, 8)}/{rand(B62, 24, 'e')}",
    ]
    text = (
        "# local dev settings\n"
        "APP_ENV=development\n"
        f"ANTHROPIC_API_KEY={secrets[0]}\n"
        f'OPENAI_API_KEY="{secrets[1]}"\n'
        f"AWS_ACCESS_KEY_ID={secrets[2]}\n"
        f"AWS_SECRET_ACCESS_KEY={secrets[3]}\n"
        f"{secrets[4]}\n"  # pasted on its own line: preceded by an escaped newline in JSON
        f"SLACK_BOT_TOKEN='{secrets[5]}'\n"
        f"SLACK_WEBHOOK_URL={secrets[6]}\n"
        "DATABASE_URL=postgres://app@localhost:5432/app\n"
    )
    return text, secrets


def test_env_file_in_tool_result() -> None:
    text, secrets = env_file()
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "user", "content": "Why does the app not start?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": text}],
                },
            ],
        }
    ).encode()
    assert b"\\n" in body  # the newlines really are JSON escapes

    out, count = Redactor().redact(body)

    assert count == len(secrets)
    for s in secrets:
        assert s.encode() not in out
    got = json.loads(out)["messages"][2]["content"][0]["content"]
    assert got.splitlines() == [
        "# local dev settings",
        "APP_ENV=development",
        "ANTHROPIC_API_KEY=[REDACTED:anthropic-key]",
        'OPENAI_API_KEY="[REDACTED:openai-key]"',
        "AWS_ACCESS_KEY_ID=[REDACTED:aws-access-key-id]",
        "AWS_SECRET_ACCESS_KEY=[REDACTED:aws-secret-key]",
        "[REDACTED:github-token]",
        "SLACK_BOT_TOKEN='[REDACTED:slack-token]'",
        "SLACK_WEBHOOK_URL=https://[REDACTED:slack-webhook]",
        "DATABASE_URL=postgres://app@localhost:5432/app",
    ]


def test_private_key_with_escaped_newlines() -> None:
    key = pem("RSA PRIVATE KEY")
    body = messages_body(f"cat id_rsa\n{key}\n$ ls\n")
    assert b"KEY-----\\n" in body

    out, count = Redactor().redact(body)

    assert count == 1
    assert contents(out) == ["cat id_rsa\n[REDACTED:private-key]\n$ ls\n"]


def test_private_key_double_encoded_service_account() -> None:
    # A service-account JSON file read by a tool: the PEM newlines are "\\n" in the body.
    key = pem("PRIVATE KEY", salt="sa")
    account = json.dumps({"type": "service_account", "private_key": key + "\n", "client_id": "123"})
    body = messages_body(account)
    assert b"\\\\n" in body

    out, count = Redactor().redact(body)

    assert count == 1
    inner = json.loads(contents(out)[0])
    assert inner == {
        "type": "service_account",
        "private_key": "[REDACTED:private-key]\n",
        "client_id": "123",
    }


def test_truncated_private_key_is_still_redacted() -> None:
    key = pem("OPENSSH PRIVATE KEY", 400)
    cut = "\n".join(key.splitlines()[:4])
    body = messages_body(f'{cut}\n... output truncated "quoted" tail')

    out, count = Redactor().redact(body)

    assert count == 1
    (got,) = contents(out)
    assert got.startswith("[REDACTED:private-key]")
    assert got.endswith('"quoted" tail')
    assert key.splitlines()[1] not in got


def test_two_private_keys_in_one_body() -> None:
    body = messages_body(pem("RSA PRIVATE KEY", salt="1") + "\nand\n" + pem("EC PRIVATE KEY", 121))
    out, count = Redactor().redact(body)
    assert count == 2
    assert contents(out) == ["[REDACTED:private-key]\nand\n[REDACTED:private-key]"]


NEAR_MISSES = """\
Run the task-runner, then pip install scikit-learn (imported as sklearn; people say sk-learn).
The desk-top layout, risk-assessment, disk-usage, whisk-mixer and mask-image all stay.
Our config uses sk-proj-settings-panel-and-dashboard-layout-for-admins as a CSS class,
and .sk-admin-sidebar-navigation-component-header-title is fine too.
Anthropic keys start with sk-ant-api03- and OpenAI ones with sk-proj- or sk-.
Placeholders: ANTHROPIC_API_KEY=sk-ant-... OPENAI_API_KEY=sk-your-key-here
SLACK_BOT_TOKEN=xoxb-your-bot-token-goes-here  GITHUB_TOKEN=ghp_xxxxxxxx
The prefix ghp_ marks classic tokens; github_pat_expiry_days_setting_for_org is a setting.
AKIAI is short, ASIAN-AMERICAN HISTORY, INTERNATIONALIZATION and internationalization.
aws_secret_access_key = os.environ["AWS_SECRET_ACCESS_KEY"]
AWS_SECRET_ACCESS_KEY=
SLACK_WEBHOOK_URL=https://hooks.slack.com/services/YOUR/WEBHOOK/URL
commit 3f9a1c2e4b5d6f708192a3b4c5d6e7f8091a2b3c, uuid 123e4567-e89b-12d3-a456-426614174000
sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
Unicode: café \u2013 naïve \u2013 Zürich \u2013 東京
-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUJ4bGv3cNNrLuZqZ0WlpSk1Y2cTgwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""

NEAR_MISS_CODE = """\
def load_key(path: Path) -> bytes:
    text = path.read_text()
    if not text.startswith("-----BEGIN RSA PRIVATE KEY-----"):
        raise ValueError("expected -----BEGIN PRIVATE KEY----- header")
    return text.encode()

PREFIXES = ("sk-ant-", "sk-proj-", "ghp_", "gho_", "github_pat_", "xoxb-", "AKIA", "ASIA")
task_queue = [f"task-{i}" for i in range(10)]
for disk in ("disk-0", "disk-1"):
    print(f"{disk}-usage", os.environ.get("OPENAI_API_KEY", "sk-..."))
"""


def test_near_misses_are_untouched() -> None:
    redactor = Redactor()
    for data in (
        NEAR_MISSES.encode(),
        NEAR_MISS_CODE.encode(),
        messages_body(NEAR_MISSES, NEAR_MISS_CODE),
        realistic_body(150_000),
        realistic_body(150_000, near_miss_every=1),
    ):
        out, count = redactor.redact(data)
        assert count == 0
        assert out is data


def test_token_boundaries() -> None:
    legacy = "sk-" + rand(B62, 48, "glue")
    akia = "AK" + "IA" + rand(UPPER36, 16, "glue")
    ghp = "gh" + "p_" + rand(B62, 36, "glue")
    r = Redactor()
    # Glued to a preceding word, or running on past the format's length: not a key.
    for text in (f"de{legacy}", f"X{akia}", f"{akia}Z", f"{legacy}Q", f"my{ghp}"):
        data = text.encode()
        assert r.redact(data) == (data, 0), text
    # Right after a JSON escape or inside a percent-encoded query: still a key.
    out, count = r.redact(f"a\\t{legacy} b%3D{akia}&c=\\n{ghp}".encode())
    assert out == (
        b"a\\t[REDACTED:openai-key] b%3D[REDACTED:aws-access-key-id]&c=\\n[REDACTED:github-token]"
    )
    assert count == 3


def test_custom_pattern_stays_inside_json_strings() -> None:
    r = Redactor([r"password=(\S+)", r"token:\S+"], defaults=False)
    # Compact JSON has no spaces, so \S+ would otherwise run on through the document.
    body = b'{"a":"password=x1","b":"token:abc","c":"keep password=\\"hi\\" now"}'
    out, count = r.redact(body)
    assert count == 3
    assert json.loads(out) == {
        "a": "password=[REDACTED:custom-1]",
        "b": "[REDACTED:custom-2]",
        "c": "keep password=[REDACTED:custom-1] now",
    }


def test_custom_match_never_splits_an_escape() -> None:
    # The first ends on the backslash of "\n", the second starts on its "n".
    r = Redactor([r"secret=(abc\\)", r"nnext"], defaults=False)
    body = json.dumps({"a": "secret=abc\nnext line", "b": "x\nnext"}).encode()
    out, count = r.redact(body)
    assert count == 2
    assert json.loads(out) == {
        "a": "secret=[REDACTED:custom-1] line",
        "b": "x[REDACTED:custom-2]",
    }


def test_custom_pattern_without_group_replaces_whole_match() -> None:
    r = Redactor([r"internal-[0-9]{4,}", r"ticket#\d+"], defaults=False)
    out, count = r.redact(b"host internal-20931 and internal-77 ticket#12 x")
    assert out == b"host [REDACTED:custom-1] and internal-77 [REDACTED:custom-2] x"
    assert count == 2


def test_custom_pattern_with_group_replaces_group_one() -> None:
    r = Redactor([r"password=(\S+)"])
    body = messages_body("db: password=hunter2 user=admin\nnext password=s3cr3t!")
    out, count = r.redact(body)
    assert count == 2
    assert contents(out) == [
        "db: password=[REDACTED:custom-1] user=admin\nnext password=[REDACTED:custom-1]"
    ]


def test_custom_patterns_numbered_after_defaults() -> None:
    secret = "gh" + "p_" + rand(B62, 36, "c")
    r = Redactor(["alpha", "(beta)"])
    out, count = r.redact(f"{secret} alpha beta".encode())
    assert out == b"[REDACTED:github-token] [REDACTED:custom-1] [REDACTED:custom-2]"
    assert count == 3
    assert [rule.name for rule in r.rules[-2:]] == ["custom-1", "custom-2"]


def test_custom_pattern_matching_empty_or_optional_group_is_ignored() -> None:
    data = b"abc"
    assert Redactor(["x*", "(y)?c"], defaults=False).redact(data) == (data, 0)


def test_invalid_custom_pattern_is_reported() -> None:
    with pytest.raises(ValueError, match="invalid redaction pattern"):
        Redactor(["password=(unclosed"])


def test_overlapping_matches_are_merged() -> None:
    r = Redactor(["abcdef", "defghi", "ghijkl", "zz"], defaults=False)
    out, count = r.redact(b"-abcdefghijkl- zz -")
    assert out == b"-[REDACTED:custom-1]- [REDACTED:custom-4] -"
    assert count == 2


def test_custom_overlapping_a_default_key() -> None:
    secret = "AK" + "IA" + rand(UPPER36, 16, "ov")
    r = Redactor([r"key id (\S+) end"])
    out, count = r.redact(f"key id {secret} end".encode())
    assert out == b"key id [REDACTED:aws-access-key-id] end"
    assert count == 1


def test_counts_every_replacement() -> None:
    keys = [make() for _, _, make in KEY_EXAMPLES]
    body = messages_body(*keys, "nothing here", " and ".join(keys[:3]))
    out, count = Redactor().redact(body)
    assert count == len(keys) + 3
    assert json.loads(out)
    assert all(k.encode() not in out for k in keys)


def test_empty_and_non_utf8() -> None:
    r = Redactor(["password=(\\S+)"])
    empty = b""
    out, count = r.redact(empty)
    assert (out, count) == (b"", 0)
    assert out is empty

    junk = b"\xff\xfe\x00sk-\x80\xc3(AKIA\xa0 -----BEGIN \xe2\x82 password\xff"
    out, count = r.redact(junk)
    assert count == 0
    assert out is junk

    secret = ("gh" + "p_" + rand(B62, 36, "nu")).encode()
    data = b"\xff\xfe" + secret + b"\x80 password=\xfa\xfb end"
    out, count = r.redact(data)
    assert out == b"\xff\xfe[REDACTED:github-token]\x80 password=[REDACTED:custom-1] end"
    assert count == 2


def test_no_rules_is_noop() -> None:
    data = messages_body("anything")
    assert Redactor(defaults=False).redact(data)[0] is data


VOCABULARY = (
    "the a to of and in is it that for on with as this be are by we can not from at or if "
    "agent reads file config module function returns value test passes fails error handler "
    "request response stream token model cache retry timeout update import class method "
    "async await should would then because change line call path check fix run task-runner "
    "desk-top"
)

TOOL_OUTPUTS = (
    "============================= test session starts ==============================\n"
    "platform linux -- Python 3.11.7, pytest-8.3.2\ncollected 214 items\n\n"
    "tests/test_store.py ........F...                                          [ 12%]\n"
    "FAILED tests/test_store.py::test_roundtrip - AssertionError: assert 3 == 4\n",
    "diff --git a/src/app/store.py b/src/app/store.py\nindex 4f2a1c9..9b07d3e 100644\n"
    "--- a/src/app/store.py\n+++ b/src/app/store.py\n@@ -41,7 +41,9 @@ class Store:\n"
    "-        return self._db.execute(query)\n+        with self._lock:\n"
    "+            return self._db.execute(query, params)\n",
    "total 48\ndrwxr-xr-x  6 dev dev 4096 Jan 12 10:02 .\n"
    "-rw-r--r--  1 dev dev 1391 Jan 12 10:02 pyproject.toml\n"
    "-rw-r--r--  1 dev dev  305 Jan 12 10:02 Makefile\ndrwxr-xr-x  3 dev dev 4096 src\n",
)


def python_file(rng: random.Random, words: list[str], lines: int) -> str:
    out = ["from __future__ import annotations\n", "import json\nimport logging\n\n"]
    for i in range(lines):
        name = "_".join(rng.sample(words, 2))
        if i % 12 == 0:
            out.append(f"\n\ndef {name}_{i}(path: str, limit: int = {i}) -> dict[str, int]:\n")
            out.append(f'    """{" ".join(rng.sample(words, 8)).capitalize()}."""\n')
        else:
            out.append(f"    {name} = compute({rng.random():.6f}, {rng.choice(words)!r})\n")
    return "".join(out)


def realistic_body(size: int, secrets: Sequence[str] = (), *, near_miss_every: int = 10) -> bytes:
    """An Anthropic Messages request of about ``size`` bytes: tools, prose, code, shell output."""
    rng = random.Random(7)
    words = VOCABULARY.split()
    tools: list[dict[str, Any]] = [
        {
            "name": name,
            "description": " ".join(rng.choice(words) for _ in range(60)),
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["path"],
            },
        }
        for name in ("read_file", "write_file", "bash", "grep", "glob")
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Fix the failing tests."}]
    n = 0
    while len(json.dumps(messages)) < size - 6000:
        n += 1
        prose = " ".join(rng.choice(words) for _ in range(40)).capitalize() + "."
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": prose},
                    {
                        "type": "tool_use",
                        "id": f"toolu_{n:04d}",
                        "name": "read_file",
                        "input": {"path": f"src/pkg/mod_{n}.py"},
                    },
                ],
            }
        )
        result = python_file(rng, words, 30) if n % 2 else TOOL_OUTPUTS[n % 3] * 3
        if n % near_miss_every == 0:
            result += NEAR_MISS_CODE
        if n == 3 and secrets:
            result += "".join(f"SECRET_{i}={s}\n" for i, s in enumerate(secrets))
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{n:04d}", "content": result}
                ],
            }
        )
    return json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 8192,
            "system": [{"type": "text", "text": NEAR_MISSES}],
            "tools": tools,
            "messages": messages,
        }
    ).encode()


def test_realistic_body_with_secrets() -> None:
    secrets = ["sk-ant-" + "api03-" + rand(B64URL, 93, "rb") + "AA", "gh" + "p_" + rand(B62, 36)]
    body = realistic_body(150_000, secrets)
    out, count = Redactor().redact(body)
    assert count == 2
    assert json.loads(out)
    assert len(body) - len(out) == sum(len(s) for s in secrets) - len(
        "[REDACTED:anthropic-key][REDACTED:github-token]"
    )


def _bench(label: str, redactor: Redactor, data: bytes, runs: int = 200) -> None:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        redactor.redact(data)
        times.append(time.perf_counter() - t0)
    times.sort()
    mean = sum(times) / runs
    print(
        f"{label:<42} {len(data) / 1024:6.1f} KiB  mean {mean * 1e6:7.1f} us  "
        f"median {times[runs // 2] * 1e6:7.1f} us  min {times[0] * 1e6:7.1f} us  "
        f"({len(data) / mean / 1e6:,.0f} MB/s)"
    )


if __name__ == "__main__":
    secrets = ["sk-ant-" + "api03-" + rand(B64URL, 93, "bench") + "AA", "gh" + "p_" + rand(B62, 36)]
    clean = realistic_body(150_000)
    dirty = realistic_body(150_000, secrets)
    dense = realistic_body(150_000, near_miss_every=1)
    assert Redactor().redact(dirty)[1] == 2
    blob = json.dumps(
        {
            "messages": [
                {"role": "user", "content": base64.b64encode(random.randbytes(110_000)).decode()}
            ]
        }
    ).encode()
    _bench("defaults, no secrets", Redactor(), clean)
    _bench("defaults, two secrets", Redactor(), dirty)
    _bench("defaults, base64 image body", Redactor(), blob)
    _bench("defaults, near-miss in every tool result", Redactor(), dense)
    _bench(
        "defaults + 2 custom patterns, two secrets",
        Redactor([r"password=(\S+)", "corp-[0-9]{6}"]),
        dirty,
    )
