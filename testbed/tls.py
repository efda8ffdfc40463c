"""A test PKI for the local broker's TLS listener: a self-signed CA and a broker certificate.

For tests and local runs only: the keys are unencrypted and the CA signs anything asked of it.
Needs the ``cryptography`` package (a dev dependency, not one of the bridge's).
"""

from __future__ import annotations

from pathlib import Path


def write_test_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Path:
    """A self-signed CA and a broker certificate it signed, as PEM files in ``directory``.

    Writes ``ca.pem`` (the CA certificate, for clients' ``ssl.ca.location``) and
    ``broker.pem`` (the broker's unencrypted PKCS#8 key, then its certificate and the CA's: a
    Kafka PEM keystore). The broker certificate names ``hosts`` (IP addresses or DNS names) so
    clients verifying the host name accept it.

    Returns:
        The path of ``ca.pem``.

    Raises:
        ImportError: The ``cryptography`` package is missing (a dev dependency).
    """
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # a dev dependency, not one of the bridge's
        raise ImportError(
            "test certificates need the 'cryptography' package (pip install cryptography)"
        ) from exc

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key, broker_key = key(), key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("local-kafka test CA"))
        .issuer_name(name("local-kafka test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    broker = (
        x509.CertificateBuilder()
        .subject_name(name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(broker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    keystore = directory / "broker.pem"
    keystore.write_bytes(
        broker_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + broker.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    keystore.chmod(0o600)
    return ca_path
