"""tapewire's local certificate authority for the HTTPS proxy mode: created on first use, its key
readable by the user only, and the leaf certificates it signs for the LLM API hosts whose TLS
the proxy terminates."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE = "ca.pem"
KEY_FILE = "ca-key.pem"
CA_YEARS = 10
# Leaves live as long as the process that signed them, but clients that check validity against
# a wrong clock get some slack on both sides.
LEAF_DAYS = 30
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)


class CAError(ValueError):
    """The CA's files cannot be made or read; the message names the file."""


def default_ca_dir() -> Path:
    return Path(platformdirs.user_data_dir("tapewire")) / "ca"


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tapewire"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start (no window in which another user could open it), and
    only if absent: two processes creating the CA at once must not overwrite each other."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_ca(directory: Path) -> None:
    """A fresh CA in `directory` (0700): P-256 key (0600) and a self-signed certificate.
    Extensions as strict verifiers (Python 3.13's VERIFY_X509_STRICT, browsers) require."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    user = os.environ.get("USER") or os.environ.get("USERNAME") or "user"
    name = _name(f"tapewire local CA ({user})")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key first: a certificate without its key would look like a CA that cannot sign.
    _write_private(directory / KEY_FILE, key_pem)
    _write_private(directory / CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    (directory / CERT_FILE).chmod(0o644)  # the certificate is public; clients read it


def load_certificate(path: Path) -> x509.Certificate:
    """The CA certificate at `path`, or a CAError naming the file and what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CAError(f"cannot read tapewire's CA certificate {path}: {e.strerror or e}") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise CAError(
            f"tapewire's CA certificate {path} is not a PEM certificate ({e}); "
            f"remove {path.parent} to have a new CA made"
        ) from None
    if _now() > cert.not_valid_after_utc:
        raise CAError(
            f"tapewire's CA certificate {path} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        )
    return cert


def ensure_ca(directory: Path) -> x509.Certificate:
    """The CA certificate in `directory`, the CA made there first when there is none."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if not cert_path.exists() and not key_path.exists():
        try:
            create_ca(directory)
        except FileExistsError:
            pass  # another process made it a moment ago: use theirs
        except OSError as e:
            raise CAError(f"cannot create tapewire's CA in {directory}: {e}") from None
    return load_certificate(cert_path)


class LocalCA:
    """The CA in a directory, made there on first use, and the TLS server contexts for the hosts
    it signs leaves for (one leaf key for all of them, one context per host, both kept for the
    process's life)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cert_path = directory / CERT_FILE
        self.key_path = directory / KEY_FILE
        self.cert = ensure_ca(directory)
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except OSError as e:
            raise CAError(
                f"cannot read tapewire's CA key {self.key_path}: {e.strerror or e}"
            ) from None
        except ValueError as e:
            raise CAError(f"tapewire's CA key {self.key_path} is not a PEM key ({e})") from None
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_bytes(*spki) != self.cert.public_key().public_bytes(*spki)
        ):
            raise CAError(
                f"tapewire's CA key {self.key_path} does not belong to {self.cert_path}; "
                f"remove {directory} to have a new CA made"
            )
        self._key = key
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._scratch: Path | None = None

    def _files(self) -> Path:
        """ssl loads certificate chains from files only: the leaves and their key go to a
        private (0700) directory of this process, made on first need, removed at close."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="tapewire-tls-"))
            _write_private(
                self._scratch / "leaf-key.pem",
                self._leaf_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        return self._scratch

    def leaf(self, host: str) -> x509.Certificate:
        """A server certificate for `host`, signed by the CA."""
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        now = _now()
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(self.cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(
                min(now + datetime.timedelta(days=LEAF_DAYS), self.cert.not_valid_after_utc)
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._leaf_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def server_context(self, host: str) -> ssl.SSLContext:
        """The TLS server side for connections to `host` (cached)."""
        context = self._contexts.get(host)
        if context is not None:
            return context
        chain = self.leaf(host).public_bytes(serialization.Encoding.PEM)
        chain += self.cert.public_bytes(serialization.Encoding.PEM)
        scratch = self._files()
        path = scratch / f"{len(self._contexts)}.pem"
        path.write_bytes(chain)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path, scratch / "leaf-key.pem")
        # The decrypted side is served by aiohttp, which speaks HTTP/1.1 only: a client that
        # offers h2 (curl, Node, httpx with http2) must be told to use HTTP/1.1.
        context.set_alpn_protocols(["http/1.1"])
        self._contexts[host] = context
        return context

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def system_bundle() -> Path | None:
    """The system's public CA bundle, as OpenSSL finds it, else a well-known place, else certifi's."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *SYSTEM_BUNDLES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    with contextlib.suppress(ImportError):
        import certifi

        return Path(certifi.where())
    return None


def write_trust_bundle(ca_cert: Path, target: Path) -> Path | None:
    """`target` := the system's public CAs followed by tapewire's CA. Returns the system bundle
    used (None when none was found: the bundle then trusts tapewire's CA only)."""
    cert = load_certificate(ca_cert).public_bytes(serialization.Encoding.PEM)
    system = system_bundle()
    try:
        public = system.read_bytes() if system else b""
    except OSError:
        system, public = None, b""
    if public and not public.endswith(b"\n"):
        public += b"\n"
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written aside and renamed: a child of another run reading the bundle never sees half of it.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".bundle-")
    with os.fdopen(fd, "wb") as f:
        f.write(public + cert)
    Path(tmp).chmod(0o644)
    Path(tmp).replace(target)
    return system
