"""Certificates for the node API port (`careledger node tls ...`): one small CA per organisation.

Why one CA per organisation, and a bundle of all of them, rather than one consortium CA:
- No organisation holds a key that can mint a certificate for another's node. A consortium
  CA's key would sit with one member (or a ceremony nobody runs twice), and whoever holds it
  could impersonate every node's API and gateway. This is the rule of the genesis ceremony:
  nobody trusts another with a private key; only public files are exchanged.
- Each organisation's CA is name-constrained (RFC 5280 NameConstraints, critical) to that
  organisation's own host names and addresses, so a member's CA that signs a certificate for
  another member's host is refused by every verifier, even though it is in the bundle.
- Routine renewal of a node certificate (`issue`) needs no one else: every peer already
  trusts the organisation's CA. Only rotating a CA (lost key, expiry, new host names) asks
  the others to change their bundle, with an overlap (docs/operations.md, section 4).
- The exchange is the member-file exchange the operators already do: each sends its `ca.pem`
  (public), each builds the same `bundle` from all of them.

Keys are ECDSA P-256 (every TLS stack and browser takes them), written 0600 and never logged
or printed. Files of a CA directory: `ca.pem`, `ca-key.pem`; of a node's: `node.pem`,
`node-key.pem`. The CA key is needed only to issue: keep its directory off the node.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from careledger.crypto.privatefs import make_private_dir, write_private_file

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
NODE_CERT = "node.pem"
NODE_KEY = "node-key.pem"
CA_DAYS = 5 * 365
NODE_DAYS = 365
CLOCK_SKEW = timedelta(minutes=5)  # a certificate is valid from a little before it is made

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class TlsCertError(ValueError):
    """A certificate cannot be made, issued or bundled as asked (the message says why)."""


@dataclass(frozen=True)
class CertInfo:
    """What an operator checks of a certificate: never anything of its key."""

    subject: str
    issuer: str
    is_ca: bool
    names: tuple[str, ...]  # subject alternative names (a node's host names and addresses)
    permitted: tuple[str, ...]  # a CA's name constraints
    not_before: datetime
    not_after: datetime
    fingerprint: str  # SHA-256 of the DER certificate, hex

    def describe(self) -> str:
        kind = "CA" if self.is_ca else "node certificate"
        names = ", ".join(self.permitted if self.is_ca else self.names) or "-"
        label = "for names" if self.is_ca else "names"
        return (
            f"{kind}: {self.subject}\n  issuer: {self.issuer}\n  {label}: {names}\n"
            f"  valid: {self.not_before:%Y-%m-%d %H:%M} to {self.not_after:%Y-%m-%d %H:%M} UTC\n"
            f"  sha256: {self.fingerprint}"
        )


# --- names -----------------------------------------------------------------------------------


def host_name(host: str) -> x509.GeneralName:
    """A node's host as a subject alternative name: an IP address or a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(_dns_name(host))


def permitted_name(name: str) -> x509.GeneralName:
    """A CA's permitted subtree: an address or network (10.0.0.0/24), or a DNS name (which
    permits itself and every name under it)."""
    try:
        return x509.IPAddress(ipaddress.ip_network(name, strict=True))
    except ValueError:
        if "/" in name or _looks_like_ip(name):
            raise TlsCertError(f"{name!r} is not an IP address or network") from None
        return x509.DNSName(_dns_name(name))


def _looks_like_ip(name: str) -> bool:
    return ":" in name or bool(re.fullmatch(r"[0-9.]+", name))


def _dns_name(name: str) -> str:
    lowered = name.lower().rstrip(".")
    bad_label = not all(_DNS_LABEL.match(p) for p in lowered.split("."))
    if len(lowered) > 253 or bad_label or _looks_like_ip(lowered):
        raise TlsCertError(f"{name!r} is neither an IP address nor a DNS host name")
    return lowered


def _name_constraints(permit: Sequence[str]) -> x509.NameConstraints:
    """Permit exactly these names; a kind of name not listed at all (addresses or DNS names)
    is excluded outright, since RFC 5280 leaves an unlisted kind unconstrained."""
    if not permit:
        raise TlsCertError("a CA needs at least one permitted host name or address (--permit)")
    permitted = [permitted_name(p) for p in permit]
    excluded: list[x509.GeneralName] = []
    if not any(isinstance(p, x509.IPAddress) for p in permitted):
        excluded += [
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ]
    if not any(isinstance(p, x509.DNSName) for p in permitted):
        excluded.append(x509.DNSName(""))  # the empty name matches every DNS name
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded or None)


def _permits(constraints: x509.NameConstraints, name: x509.GeneralName) -> bool:
    """Whether a certificate for `name` would pass the CA's name constraints."""
    return any(_within(name, subtree) for subtree in constraints.permitted_subtrees or ())


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
        network = subtree.value
        return isinstance(network, IpNetwork) and name.value in network
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        return name.value == subtree.value or name.value.endswith("." + subtree.value)
    return False


# --- making and issuing ----------------------------------------------------------------------


def make_ca(
    out_dir: Path,
    name: str,
    permit: Sequence[str],
    *,
    days: int = CA_DAYS,
    now: datetime | None = None,
) -> CertInfo:
    """Make an organisation's TLS CA in `out_dir` (`ca.pem`, and `ca-key.pem` 0600),
    name-constrained to `permit`. Refuses a directory that already holds a CA."""
    if not name.strip():
        raise TlsCertError("the CA needs the organisation's name")
    constraints = _name_constraints(permit)
    _refuse_existing(out_dir / CA_CERT, out_dir / CA_KEY)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} TLS CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        _validity(x509.CertificateBuilder(), days, now)
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(constraints, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    make_private_dir(out_dir)
    write_private_file(out_dir / CA_KEY, _key_pem(key))
    (out_dir / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_info(cert)


def issue_node_cert(
    ca_dir: Path,
    hosts: Sequence[str],
    out_dir: Path,
    *,
    days: int = NODE_DAYS,
    now: datetime | None = None,
    replace: bool = False,
) -> CertInfo:
    """Issue a node certificate for `hosts` (the names and addresses peers and clients use)
    from the CA in `ca_dir`: `node.pem` and `node-key.pem` (0600) in `out_dir`, a new key
    each time. `replace`: overwrite the node's current pair (renewal; the node takes it on
    its next start). Refuses a host outside the CA's permitted names."""
    ca_cert, ca_key = load_ca(ca_dir)
    names = _host_names(hosts)
    constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    outside = [n.value for n in names if not _permits(constraints, n)]
    if outside:
        raise TlsCertError(
            f"the CA in {ca_dir} may not issue for {', '.join(map(str, outside))}: "
            "it is constrained to its organisation's own names (make a new CA to add names)"
        )
    if not replace:
        _refuse_existing(out_dir / NODE_CERT, out_dir / NODE_KEY)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_node_cert(ca_cert, ca_key, key.public_key(), names, days=days, now=now)
    make_private_dir(out_dir)
    write_private_file(out_dir / NODE_KEY, _key_pem(key))
    (out_dir / NODE_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_info(cert)


def sign_node_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    names: Sequence[x509.GeneralName],
    *,
    days: int = NODE_DAYS,
    now: datetime | None = None,
) -> x509.Certificate:
    """A node (TLS server) certificate for `names`, signed by the CA. No check of the CA's
    name constraints here: `issue_node_cert` makes them; verifiers enforce them."""
    organisation = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    org = str(organisation[0].value) if organisation else "CareLedger"
    # The common name is not a host name on purpose: verifiers match the alternative names.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{org} node"),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _validity(x509.CertificateBuilder(), days, now)
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    return builder.sign(ca_key, hashes.SHA256())


def make_bundle(
    ca_certs: Sequence[Path], out: Path, *, now: datetime | None = None
) -> list[CertInfo]:
    """Write the trust bundle `out` (what `--tls-ca` names) from members' CA certificates:
    each must be a CA and unexpired; duplicates are written once. During a CA rotation the
    bundle holds the old and the new CA of that organisation."""
    if not ca_certs:
        raise TlsCertError("a bundle needs at least one CA certificate")
    moment = now or datetime.now(UTC)
    kept: dict[str, x509.Certificate] = {}
    for path in ca_certs:
        for cert in _load_certs(path):
            info = cert_info(cert)
            if not info.is_ca:
                raise TlsCertError(f"{path} holds a certificate that is not a CA: {info.subject}")
            if info.not_after < moment:
                raise TlsCertError(f"the CA {info.subject} in {path} expired on {info.not_after}")
            kept.setdefault(info.fingerprint, cert)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in kept.values())
    out.write_bytes(pem)
    return [cert_info(c) for c in kept.values()]


# --- reading ---------------------------------------------------------------------------------


def load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key of `ca_dir`; TlsCertError when they are missing or not a
    name-constrained CA made by `make_ca`."""
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TlsCertError(f"{ca_dir} holds no readable CA ({CA_CERT}, {CA_KEY}): {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise TlsCertError(f"{ca_dir / CA_KEY} is not the key of {ca_dir / CA_CERT}")
    if not cert_info(cert).is_ca or not cert_info(cert).permitted:
        raise TlsCertError(f"{ca_dir / CA_CERT} is not a name-constrained CA")
    return cert, key


def describe_file(path: Path) -> list[CertInfo]:
    """Every certificate of a PEM file (a node certificate, a CA, a bundle)."""
    return [cert_info(c) for c in _load_certs(path)]


def cert_info(cert: x509.Certificate) -> CertInfo:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        is_ca=is_ca,
        names=tuple(str(n.value) for n in _extension_names(cert, x509.SubjectAlternativeName)),
        permitted=_permitted(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def _extension_names(
    cert: x509.Certificate, kind: type[x509.SubjectAlternativeName]
) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(kind).value)
    except x509.ExtensionNotFound:
        return []


def _permitted(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(n.value) for n in constraints.permitted_subtrees or ())


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsCertError(f"{path} holds no readable PEM certificate: {exc}") from None
    return certs


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise TlsCertError("a node certificate needs at least one host name or address (--host)")
    names: list[x509.GeneralName] = []
    for host in hosts:
        name = host_name(host)
        if name not in names:
            names.append(name)
    return names


def _validity(
    builder: x509.CertificateBuilder, days: int, now: datetime | None
) -> x509.CertificateBuilder:
    if days < 1:
        raise TlsCertError("a certificate must be valid for at least one day")
    start = (now or datetime.now(UTC)) - CLOCK_SKEW
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CLOCK_SKEW + timedelta(days=days))
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # the node loads it unattended; the file is 0600
    )


def _refuse_existing(*paths: Path) -> None:
    present = [str(p) for p in paths if p.exists()]
    if present:
        raise TlsCertError(f"{', '.join(present)} already exist: not overwritten")
