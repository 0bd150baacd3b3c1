"""The HTTPS proxy mode: CONNECT on the proxy listener. Loopback only: the "public" providers are
fake ones served over TLS on 127.0.0.1 with a certificate of a test CA that tapewire's upstream
side is told to trust, and the allow-listed host names reach them through `--upstream HOST=URL`
(the CONNECT names the host; no DNS is involved)."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx  # the SDKs' own HTTP client (httpx2 is httpx's successor)
import openai
import pytest

from conftest import RECORDING, settings_for, stored
from fakeprovider import FakeProvider, load_recording
from servecli import ServeProcess, cli
from tapewire.capture.tls import LocalCA
from tapewire.service import Service, ServiceThread
from tapewire.store import open_store
from tapewire.store.location import DbRef
from test_run import SDK_CALLS
from test_sdk import anthropic_calls, openai_calls

HOSTS = ("api.anthropic.com", "api.openai.com")


@pytest.fixture(scope="module")
def public_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    """Stands in for the public CAs: signs the fake providers' certificates."""
    ca = LocalCA(tmp_path_factory.mktemp("public-ca"))
    yield ca
    ca.close()


@pytest.fixture
def tls_fake(public_ca: LocalCA) -> Iterator[FakeProvider]:
    with FakeProvider(RECORDING, ssl_context=public_ca.server_context("127.0.0.1")) as provider:
        yield provider


@pytest.fixture
def other_site(public_ca: LocalCA) -> Iterator[FakeProvider]:
    """A host outside the allow-list, over TLS (reached by its address, 127.0.0.1)."""
    with FakeProvider(ssl_context=public_ca.server_context("127.0.0.1")) as provider:
        yield provider


def https_settings(fake: FakeProvider, tmp_path: Path, public_ca: LocalCA, **overrides: Any) -> Any:
    given: dict[str, Any] = {
        "https_proxy": True,
        "ca_dir": tmp_path / "ca",
        "upstream_ca": public_ca.cert_path,
        # The base-URL mode's upstreams and the allow-listed hosts' alike: to the fake.
        "upstreams": [f"{name}={fake.url}" for name in ("anthropic", "openai", *HOSTS)],
    }
    return settings_for(fake, tmp_path, **(given | overrides))


@pytest.fixture
def https_recorder(
    tls_fake: FakeProvider, public_ca: LocalCA, tmp_path: Path, db: DbRef
) -> Iterator[Service]:
    with ServiceThread(https_settings(tls_fake, tmp_path, public_ca, db=db)) as service:
        yield service


def client_trust(service: Service) -> ssl.SSLContext:
    """What an agent trusts under `tapewire run --https-proxy`: tapewire's CA (and, there, the
    system's; these tests reach no public host)."""
    assert service.https is not None
    return ssl.create_default_context(cafile=service.https.ca.cert_path)


def http_client(service: Service, session: str | None = None, **kw: Any) -> httpx.Client:
    userinfo = f"{session}@" if session else ""
    proxy = f"http://{userinfo}127.0.0.1:{service.port}"
    return httpx.Client(proxy=proxy, verify=client_trust(service), trust_env=False, **kw)


def test_ca_made_on_first_use_private(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "ca")
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
    again = LocalCA(tmp_path / "ca")  # the same CA, not a new one
    assert again.cert == ca.cert
    ca.close()
    again.close()


def test_ca_command_prints_path() -> None:
    # conftest points XDG_DATA_HOME at a temporary directory: the default place is under it.
    done = cli("ca", "--path")
    path = Path(done.stdout.strip())
    assert path == Path(os.environ["XDG_DATA_HOME"]) / "tapewire" / "ca" / "ca.pem"
    assert path.is_file()
    assert stat.S_IMODE((path.parent / "ca-key.pem").stat().st_mode) == 0o600
    assert "SHA-256" in cli("ca").stdout


def test_sdks_through_https_proxy(
    tls_fake: FakeProvider, public_ca: LocalCA, https_recorder: Service
) -> None:
    def direct_http() -> httpx.Client:
        trust = ssl.create_default_context(cafile=public_ca.cert_path)
        return httpx.Client(verify=trust, trust_env=False)

    # (An SDK client closes the HTTP client it was given.)
    with anthropic.Anthropic(base_url=tls_fake.url, api_key="sk-ant-test",
                             http_client=direct_http()) as client:  # fmt: skip
        direct = anthropic_calls(client)
    with openai.OpenAI(base_url=tls_fake.url + "/v1", api_key="sk-test",
                       http_client=direct_http()) as client:  # fmt: skip
        direct_openai = openai_calls(client)
    seen = len(tls_fake.received)
    # The SDKs' own default hosts, reached through HTTPS_PROXY as an agent would.
    with anthropic.Anthropic(api_key="sk-ant-test",
                             http_client=http_client(https_recorder, "sess-https")) as client:  # fmt: skip
        proxied = anthropic_calls(client)
    with openai.OpenAI(api_key="sk-test",
                       http_client=http_client(https_recorder, "sess-https")) as client:  # fmt: skip
        proxied_openai = openai_calls(client)
    assert proxied == direct
    assert proxied_openai == direct_openai

    rows = stored(https_recorder).exchanges(limit=100, with_bodies=True)
    assert len(rows) == 10
    assert {(r.upstream, r.provider) for r in rows} == {
        ("api.anthropic.com", "anthropic"),
        ("api.openai.com", "openai"),
    }
    assert {r.outcome for r in rows} == {"complete"}
    assert {r.session for r in rows} == {"sess-https"}
    # Credentials reached the provider but not the store.
    received = tls_fake.received[seen:]
    for secret, sent in (("sk-ant-test", received[:6]), ("sk-test", received[6:])):
        assert all(any(secret in v for _, v in r.headers) for r in sent)
    for row in rows:
        assert not any("sk-" in v for _, v in row.request_headers)
        assert ("authorization", "") in [(k.lower(), v) for k, v in row.request_headers]
    # Byte-exact both ways: what the provider got is what was stored.
    assert sorted(r.request_body or b"" for r in rows) == sorted(r.body for r in received)


def test_recorded_bytes_exact_through_https_proxy(https_recorder: Service) -> None:
    turns = load_recording(RECORDING)[:3]
    answers = []
    with http_client(https_recorder) as client:
        for turn in turns:
            with client.stream(
                "POST",
                "https://api.anthropic.com/v1/messages?beta=true",
                headers=turn.request_headers,
                content=turn.request_body,
            ) as resp:
                answers.append((resp.status_code, b"".join(resp.iter_raw())))
    rows = stored(https_recorder).exchanges(limit=100, with_bodies=True)
    by_request = {r.request_body: r for r in rows}
    for turn, (status, body) in zip(turns, answers, strict=True):
        assert (status, body) == (turn.status, turn.response_body)  # gzip bytes, untouched
        row = by_request[turn.request_body]
        assert row.response_body == turn.response_body
        assert row.response_encoding == "gzip"
        assert row.path == "/v1/messages?beta=true"
        assert row.evidence["claude_session"]


def test_other_hosts_tunnelled_unrecorded(
    https_recorder: Service, other_site: FakeProvider, public_ca: LocalCA
) -> None:
    # Trusting only the public CA: the client sees the site's own certificate, not tapewire's.
    proxy = f"http://127.0.0.1:{https_recorder.port}"
    trust = ssl.create_default_context(cafile=public_ca.cert_path)
    with httpx.Client(proxy=proxy, verify=trust, trust_env=False) as client:
        resp = client.post(
            other_site.url + "/v1/chat/completions",
            headers={"x-fake-scenario": "echo", "authorization": "Bearer sk-secret"},
            content=b"tunnelled bytes",
        )
    assert resp.content == b"tunnelled bytes"
    assert other_site.received[-1].body == b"tunnelled bytes"
    assert stored(https_recorder).exchanges() == []
    assert https_recorder.status()["https_proxy"]["tunnelled_connections"] == 1
    # The same listener still serves tapewire's control paths and the base-URL mode.
    assert httpx.get(https_recorder.url + "/_tapewire/status", trust_env=False).status_code == 200
    with openai.OpenAI(base_url=https_recorder.url + "/v1", api_key="sk-test") as client:
        stream = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert [c.choices[0].delta.content for c in stream if c.choices]
    assert [(r.upstream, r.outcome) for r in stored(https_recorder).exchanges()] == [
        ("openai", "complete")
    ]


def _connect_raw(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(4096)


def test_connect_refusals(
    tls_fake: FakeProvider, public_ca: LocalCA, tmp_path: Path, db: DbRef
) -> None:
    settings = https_settings(tls_fake, tmp_path, public_ca, db=db, token="s3cret")
    with ServiceThread(settings) as service:
        port = service.port
        target = b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
        assert _connect_raw(port, target + b"\r\n").startswith(b"HTTP/1.1 407 ")
        good = base64.b64encode(b"session:s3cret")
        answer = _connect_raw(port, target + b"Proxy-Authorization: Basic " + good + b"\r\n\r\n")
        assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert _connect_raw(port, b"CONNECT nowhere HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        # A client that does not trust tapewire's CA: its handshake fails, and it is said.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(target + b"Proxy-Authorization: Basic " + good + b"\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            with pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context(cafile=public_ca.cert_path).wrap_socket(
                    sock, server_hostname="api.openai.com"
                )
        deadline = time.monotonic() + 10  # the server reads the client's alert a moment later
        while not service.status()["capture"]["drops"] and time.monotonic() < deadline:
            time.sleep(0.02)
        status = service.status()["capture"]
    assert status["drops"].get("tls_handshake_failed") == 1
    assert str(settings.ca_dir / "ca.pem") in status["last_drop"]["detail"]


def test_upstream_ca_is_needed(tls_fake: FakeProvider, public_ca: LocalCA, tmp_path: Path) -> None:
    """Without --upstream-ca, the test provider's certificate is not trusted upstream: the
    agent gets tapewire's clear 502, recorded as an upstream error."""
    settings = https_settings(tls_fake, tmp_path, public_ca, upstream_ca=None)
    with ServiceThread(settings) as service, http_client(service) as client:
        resp = client.post("https://api.openai.com/v1/chat/completions", content=b"{}")
        assert resp.status_code == 502
        assert "certificate" in resp.json()["error"]["message"]
        assert [r.outcome for r in stored(service).exchanges()] == ["upstream_error"]


AGENT = (
    SDK_CALLS
    + """for name in ("HTTPS_PROXY", "https_proxy", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE",
             "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "OPENAI_BASE_URL"):
    print(name, os.environ.get(name))
"""
)


def _run_https(tmp_path: Path, db: DbRef, fake: FakeProvider, public_ca: LocalCA,
               ca_dir: Path) -> subprocess.CompletedProcess[str]:  # fmt: skip
    (tmp_path / "agent.py").write_text(AGENT)
    upstreams = [f"--upstream={host}={fake.url}" for host in HOSTS]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_")) and k.lower() != "https_proxy"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "tapewire", "run", "--https-proxy", "--db", str(db),
         "--ca-dir", str(ca_dir), "--upstream-ca", str(public_ca.cert_path), *upstreams,
         "--", sys.executable, "agent.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_run_https_proxy(
    tls_fake: FakeProvider, public_ca: LocalCA, tmp_path: Path, db: DbRef
) -> None:
    ca_dir = tmp_path / "ca"
    done = _run_https(tmp_path, db, tls_fake, public_ca, ca_dir)
    assert done.returncode == 0, done.stderr
    session = done.stderr.strip().splitlines()[-1].split()[2]
    env = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert env["OPENAI_BASE_URL"] == "None"  # the SDKs used their default hosts
    assert env["HTTPS_PROXY"] == env["https_proxy"]
    assert env["HTTPS_PROXY"].startswith(f"http://{session}@127.0.0.1:")
    assert env["NODE_EXTRA_CA_CERTS"] == str(ca_dir / "ca.pem")
    bundle = Path(env["SSL_CERT_FILE"])
    assert env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == str(bundle)
    # The bundle: the system's public CAs, then tapewire's.
    text = bundle.read_text()
    assert text.endswith((ca_dir / "ca.pem").read_text())
    assert text.count("BEGIN CERTIFICATE") > 1

    store = open_store(db)
    rows = store.exchanges()
    store.close()
    assert {(r.upstream, r.provider, r.session, r.outcome) for r in rows} == {
        ("api.openai.com", "openai", session, "complete"),
        ("api.anthropic.com", "anthropic", session, "complete"),
    }


@pytest.mark.parametrize("damage", ["corrupt", "unreadable"])
def test_run_https_proxy_bad_ca(
    tls_fake: FakeProvider, public_ca: LocalCA, tmp_path: Path, damage: str
) -> None:
    ca_dir = tmp_path / "ca"
    LocalCA(ca_dir).close()
    cert = ca_dir / "ca.pem"
    if damage == "corrupt":
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    else:  # (permissions would not stop root: a directory in its place stops anyone)
        cert.unlink()
        cert.mkdir()
    done = _run_https(tmp_path, tmp_path / "t.db", tls_fake, public_ca, ca_dir)
    assert done.returncode != 0
    assert str(cert) in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # the child did not run


def test_run_uses_running_serve_https_proxy(
    tls_fake: FakeProvider, public_ca: LocalCA, tmp_path: Path
) -> None:
    """`tapewire run --https-proxy` beside a `tapewire serve --https-proxy` on the same database
    points its child at that serve, trusting the CA serve says it uses."""
    db = tmp_path / "served.db"
    serve_ca = tmp_path / "serve-ca"
    extra = [f"--upstream={host}={tls_fake.url}" for host in HOSTS]
    with ServeProcess(db, tls_fake.url, "--https-proxy", "--ca-dir", str(serve_ca),
                      "--upstream-ca", str(public_ca.cert_path), "--no-ui", *extra) as serve:  # fmt: skip
        done = _run_https(tmp_path, db, tls_fake, public_ca, tmp_path / "unused-ca")
        assert done.returncode == 0, done.stderr + serve.log.read_text()
        env = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        assert env["HTTPS_PROXY"].endswith(serve.url.split("://")[1])
        assert env["NODE_EXTRA_CA_CERTS"] == str(serve_ca / "ca.pem")
        assert serve.terminate() == 0
    assert "HTTPS proxy: HTTPS_PROXY=" in serve.log.read_text()
    store = open_store(db)
    assert {r.upstream for r in store.exchanges()} == set(HOSTS)
    store.close()


def test_run_https_proxy_needs_serve_with_it(
    tls_fake: FakeProvider, public_ca: LocalCA, tmp_path: Path
) -> None:
    db = tmp_path / "served.db"
    with ServeProcess(db, tls_fake.url, "--no-ui"):
        done = _run_https(tmp_path, db, tls_fake, public_ca, tmp_path / "ca")
    assert done.returncode != 0
    assert "--https-proxy" in done.stderr and done.stdout == ""
