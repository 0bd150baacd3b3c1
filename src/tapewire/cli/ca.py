"""`tapewire ca`: where tapewire's local CA is (the HTTPS proxy mode's; docs/https-proxy.md)."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives import hashes

from tapewire.capture.tls import CERT_FILE, KEY_FILE, CAError, ensure_ca
from tapewire.cli.options import ca_dir_option


@click.command()
@click.option("--path", "path_only", is_flag=True, help="Print only the certificate's path.")
@ca_dir_option
def ca(path_only: bool, ca_dir: Path) -> None:
    """Print where tapewire's CA certificate is (the CA is made on first use).

    Clients of `tapewire serve --https-proxy` must trust this certificate; `tapewire run
    --https-proxy` makes its child trust it. Its key stays beside it, readable by you only.
    """
    try:
        cert = ensure_ca(ca_dir)
    except CAError as e:
        raise click.ClickException(str(e)) from None
    path = ca_dir / CERT_FILE
    if path_only:
        click.echo(str(path))
        return
    click.echo(f"certificate: {path}")
    click.echo(f"key:         {ca_dir / KEY_FILE} (readable by you only)")
    click.echo(f"subject:     {cert.subject.rfc4514_string()}")
    click.echo(f"valid until: {cert.not_valid_after_utc:%Y-%m-%d}")
    click.echo(f"SHA-256:     {cert.fingerprint(hashes.SHA256()).hex(':').upper()}")
