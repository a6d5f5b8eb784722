"""TLS to the broker: ``amqps://`` URLs, with the broker's certificate verified.

``connection_parameters(url, tls)`` turns one broker URL into pika's connection parameters. For an
``amqps://`` URL the connection is TLS 1.2 or later and the broker must prove who it is: its certificate
must chain to the CA file (``tls.ca``; without one, the system's trusted CAs) and name the host of the
URL (unless ``verify_hostname=False``, an explicit escape hatch). ``cert``/``key`` add a client
certificate for brokers that ask for one. An ``amqp://`` URL stays plaintext; ``check_urls`` refuses
TLS options with no ``amqps://`` URL to use them, and a list that mixes the two schemes (credentials
would go in clear to some nodes).

The SSL context is built again on every connection attempt, so certificate files replaced on disk
(rotation) are picked up at the next reconnect.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pika

from broker_mesos.core.errors import BrokerMesosError

TLS_SCHEME = "amqps"


class TlsError(BrokerMesosError, ValueError):
    """TLS options that cannot be used: an unreadable or invalid CA, certificate or key file, or no
    ``amqps://`` URL to use them with."""


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How to do TLS with the broker. ``ca``: PEM file of the CA(s) the broker's certificate must chain to
    (``None``: the system's); ``cert``/``key``: this client's certificate and key (PEM; ``key`` may be in
    ``cert``); ``verify_hostname``: the certificate must name the URL's host."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify_hostname: bool = True

    def __post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise TlsError("a TLS key needs its certificate (--tls-cert)")

    def context(self) -> ssl.SSLContext:
        """A client SSL context for these options; ``TlsError`` if a file cannot be loaded."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname on
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.ca is not None:
                context.load_verify_locations(cafile=self.ca)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load the TLS CA file {self.ca}: {_reason(exc)}") from None
        if self.cert is not None:
            try:
                context.load_cert_chain(self.cert, self.key, password=_no_passphrase)
            except (OSError, ssl.SSLError) as exc:
                files = self.cert if self.key is None else f"{self.cert} / {self.key}"
                raise TlsError(f"cannot load the TLS certificate and key {files}: {_reason(exc)}") from None
        context.check_hostname = self.verify_hostname
        return context


def is_tls_url(url: str) -> bool:
    return urlsplit(url.strip()).scheme.lower() == TLS_SCHEME


def check_urls(urls: Iterable[str], tls: TlsOptions | None) -> None:
    """``TlsError`` unless ``urls`` are all ``amqps://`` or all plaintext, and TLS options (if any) have
    an ``amqps://`` URL to apply to."""
    schemes = {is_tls_url(u) for u in urls}
    if len(schemes) > 1:
        raise TlsError("the broker URLs mix amqp:// and amqps://; use amqps:// for every node")
    if tls is not None and schemes != {True}:
        raise TlsError("TLS options were given but the broker URL is not amqps://")


def connection_parameters(url: str, tls: TlsOptions | None) -> pika.URLParameters:
    """pika's parameters for ``url``; for ``amqps://``, TLS with peer verification per ``tls`` (defaults:
    system CAs, hostname checked). ``TlsError`` if the TLS files cannot be loaded."""
    params = pika.URLParameters(url)
    if is_tls_url(url):
        options = tls if tls is not None else TlsOptions()
        params.ssl_options = pika.SSLOptions(options.context(), server_hostname=params.host)
    return params


def describe_ssl_error(error: ssl.SSLError) -> str:
    """A handshake failure as a short line: ``certificate verify failed: unable to get local issuer
    certificate``, ``tlsv1 alert unknown ca``, ..."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    return _reason(error)


# pika reports an alert the broker sends after the handshake (TLS 1.3: a client certificate it refuses)
# as text, "Stream connection lost: SSLError(1, '[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad ...')"
_SSL_TEXT = re.compile(r"\[SSL: [A-Z0-9_]+\] ([^'\"(]+?)\s*(?:\(_ssl\.c|['\"]|$)")


def describe_ssl_text(text: str) -> str | None:
    """The TLS failure inside an error's text (``tls: sslv3 alert bad certificate``), or ``None``."""
    found = _SSL_TEXT.search(text)
    if found is None:
        if "SSLEOFError" in text:  # the broker hung up mid-handshake (a busy broker's way to refuse a cert)
            return ("the broker refused the TLS connection (it closed it during the handshake): "
                    "check --tls-cert and --tls-key")
        return None
    reason = found.group(1).strip().lower()
    if "alert" not in reason:
        return f"tls: {reason}"
    hint = ": check --tls-cert and --tls-key" if "certificate" in reason or "unknown ca" in reason else ""
    return f"the broker refused the TLS connection ({reason}){hint}"


def _no_passphrase() -> str:
    """Never prompt on a terminal for a key's passphrase (a daemon would hang): refuse encrypted keys."""
    raise TlsError("the TLS key is encrypted: give a key file without a passphrase (mode 0600)")


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).replace("_", " ").lower()
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or error.__class__.__name__
