"""TLS on the node API port and for blob replication between nodes: `TlsSettings`.

In network mode one port serves the node API, the FHIR gateway and the portal, and peers'
`POST /replication/fetch` lands there. With a certificate and key configured it serves HTTPS
only (TLS 1.2 or newer); with a CA bundle configured the replication client verifies every
peer's certificate against that bundle alone (not the system's public CAs) and refuses a peer
named by an `http://` URL, so the transport cannot be downgraded by a mistyped peer list.

TLS is the transport's protection. The fetch request is signed by the organisation's key in
any case (protocol/signing.py), and a fetched blob is kept only if its SHA-256 is the hash the
chain anchored; TLS adds confidentiality of the ciphertexts and of which blobs are asked for,
and authenticates the peer before a request is sent. The server asks no client certificate:
browsers use the same port, and the fetch route authenticates the organisation by signature.

Certificates are read when the node starts: a new certificate or bundle takes effect on a
restart (docs/operations.md, section 4 describes rotation with an overlap).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsConfigError(ValueError):
    """The TLS settings are incomplete, unreadable, or contradict the peer list."""


@dataclass(frozen=True)
class TlsSettings:
    """`cert`/`key`: this node's certificate and private key (PEM), served on its API port;
    `ca`: the trust bundle (PEM CA certificates) peers' certificates must chain to."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TlsConfigError("a TLS certificate needs its key, and a key its certificate")

    @property
    def serves_https(self) -> bool:
        return self.cert is not None

    @property
    def verifies_peers(self) -> bool:
        """Peers must be reached over HTTPS and verified against `ca`."""
        return self.ca is not None

    @property
    def configured(self) -> bool:
        return self.serves_https or self.verifies_peers

    def server_context(self) -> ssl.SSLContext:
        """The context the API port serves with: this node's certificate, TLS 1.2 or newer."""
        if self.cert is None or self.key is None:
            raise TlsConfigError("no TLS certificate and key configured")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_VERSION
        try:
            context.load_cert_chain(self.cert, self.key)
        except OSError as exc:
            # The message names the files, never their contents.
            raise TlsConfigError(
                f"cannot load the TLS certificate {self.cert} with key {self.key}: {_reason(exc)}"
            ) from None
        return context

    def client_context(self) -> ssl.SSLContext | bool:
        """What the replication client verifies peers with: the bundle alone when one is
        configured (True, httpx's default, otherwise: only https:// peers use it)."""
        if self.ca is None:
            return True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, cert required
        context.minimum_version = MINIMUM_VERSION
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        try:
            context.load_verify_locations(cafile=self.ca)
        except OSError as exc:
            raise TlsConfigError(
                f"cannot load the TLS CA bundle {self.ca}: {_reason(exc)}"
            ) from None
        return context

    def check_peers(self, peers: Sequence[str]) -> None:
        """Raise TlsConfigError for a peer this node would reach without verified TLS."""
        if not self.verifies_peers:
            return
        plain = [p for p in peers if not p.lower().startswith("https://")]
        if plain:
            raise TlsConfigError(
                "TLS is required (a CA bundle is configured) but these peers are not "
                f"https:// URLs: {', '.join(plain)}"
            )

    def local_url(self, host: str, port: int) -> str:
        """The URL at which this machine's own clients of the API port (the gateway and the
        portal's enrolment in the same process, `node status`) reach it: plain http:// without
        a certificate; with one, https:// at `host` if the certificate names it, else at the
        certificate's first name (hostname verification needs a name the certificate has).
        `host` is where the server listens, as something to connect to (`dial`)."""
        if self.cert is None:
            return f"http://{host}:{port}"
        names = self.cert_names()
        if not names:
            raise TlsConfigError(f"the TLS certificate {self.cert} names no host")
        chosen = host if host.strip("[]") in names else names[0]
        if ":" in chosen:  # an IPv6 address
            chosen = f"[{chosen.strip('[]')}]"
        return f"https://{chosen}:{port}"

    def cert_names(self) -> list[str]:
        """The host names and addresses this node's certificate is valid for."""
        if self.cert is None:
            return []
        try:
            cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
            alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, x509.ExtensionNotFound) as exc:
            raise TlsConfigError(f"cannot read the names of {self.cert}: {exc}") from None
        names = alt.get_values_for_type(x509.DNSName)
        addresses = alt.get_values_for_type(x509.IPAddress)
        return [*names, *(str(a) for a in addresses)]

    def check(self, peers: Sequence[str] = ()) -> None:
        """Load everything once, so a bad file or peer fails before the node starts."""
        if self.serves_https:
            self.server_context()
        self.client_context()
        self.check_peers(peers)


def tls_settings(
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
    *,
    peers: Sequence[str] = (),
) -> TlsSettings:
    """The settings of `careledger node start --tls-cert --tls-key --tls-ca`, checked: the
    certificate loads with its key, the bundle loads, and (with a bundle) every peer API URL
    is https://. Raises TlsConfigError with a message for the operator."""
    settings = TlsSettings(cert, key, ca)
    settings.check(peers)
    return settings


def _reason(exc: OSError) -> str:
    """What went wrong, without the file's contents (ssl.SSLError is an OSError too)."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


def dial(host: str) -> str:
    """Where this machine reaches a server listening on `host` (a wildcard is not an
    address to connect to)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
