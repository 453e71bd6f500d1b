"""The plaintext openings that come before TLS on STARTTLS protocols.

Each function takes a connected socket (with its timeout set), speaks the protocol up
to the point where the server expects a TLS ClientHello, and raises StartTlsRefused
when the server will not switch. Nothing here reads or sends credentials.

Side effects: network, on the socket it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations: `--help` and `status` need no socket module
    import socket


class StartTlsRefused(Exception):
    """The server answered, but not with a switch to TLS."""


def _read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise StartTlsRefused("the server closed the connection")
        buf += chunk
        if len(buf) > limit:
            raise StartTlsRefused("an over-long line from the server")
    return bytes(buf)


def _smtp_reply(sock: socket.socket) -> tuple[int, list[str]]:
    """One (possibly multi-line) SMTP reply: code and text lines (RFC 5321 section 4.2)."""
    lines = []
    while True:
        line = _read_line(sock).decode("ascii", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit():
            raise StartTlsRefused(f"not an SMTP reply: {line[:80]!r}")
        lines.append(line[4:])
        if len(line) == 3 or line[3] == " ":
            return int(line[:3]), lines


def smtp(sock: socket.socket) -> None:
    code, text = _smtp_reply(sock)
    if code != 220:
        raise StartTlsRefused(f"SMTP greeting {code} {' '.join(text)[:80]}")
    sock.sendall(b"EHLO certagent-check.invalid\r\n")
    code, text = _smtp_reply(sock)
    if code != 250:
        raise StartTlsRefused(f"EHLO answered {code}")
    if not any(t.upper().split(" ")[0] == "STARTTLS" for t in text):
        raise StartTlsRefused("the SMTP server does not offer STARTTLS")
    sock.sendall(b"STARTTLS\r\n")
    code, text = _smtp_reply(sock)
    if code != 220:
        raise StartTlsRefused(f"STARTTLS answered {code} {' '.join(text)[:80]}")


def imap(sock: socket.socket) -> None:
    greeting = _read_line(sock)
    if not greeting.startswith(b"* OK"):
        raise StartTlsRefused(f"IMAP greeting {greeting[:80]!r}")
    sock.sendall(b"c1 STARTTLS\r\n")
    while True:  # untagged lines may come first (RFC 3501 section 6.2.1)
        line = _read_line(sock)
        if line.startswith(b"c1 "):
            if not line.upper().startswith(b"C1 OK"):
                raise StartTlsRefused(f"STARTTLS answered {line[:80]!r}")
            return


POSTGRES_SSL_REQUEST = struct.pack("!II", 8, 80877103)


def postgres(sock: socket.socket) -> None:
    """SSLRequest (PostgreSQL protocol 3, section 55.2.10): one byte back, S or N."""
    sock.sendall(POSTGRES_SSL_REQUEST)
    answer = sock.recv(1)
    if answer != b"S":
        raise StartTlsRefused(
            "the PostgreSQL server does not accept SSL" if answer == b"N" else "no SSL answer"
        )


# LDAPMessage { messageID 1, extendedReq [APPLICATION 23] { requestName [0] StartTLS OID } }
LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
LDAP_STARTTLS = (
    b"\x30\x1d\x02\x01\x01\x77\x18\x80\x16" + LDAP_STARTTLS_OID
)  # lengths fixed by the OID's 22 bytes


def _ber_length(sock: socket.socket) -> int:
    first = _recv_exact(sock, 1)[0]
    if first < 0x80:
        return first
    count = first & 0x7F
    if not 0 < count <= 4:
        raise StartTlsRefused("a malformed LDAP length")
    return int.from_bytes(_recv_exact(sock, count), "big")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise StartTlsRefused("the server closed the connection")
        buf += chunk
    return bytes(buf)


def ldap(sock: socket.socket) -> None:
    """Extended operation StartTLS (RFC 4511 section 4.14); resultCode 0 is success."""
    sock.sendall(LDAP_STARTTLS)
    if _recv_exact(sock, 1) != b"\x30":
        raise StartTlsRefused("not an LDAP message")
    body = _recv_exact(sock, _ber_length(sock))
    # messageID (INTEGER), then extendedResp [APPLICATION 24] whose first element is
    # resultCode (ENUMERATED).
    i = 2 + body[1]  # skip the messageID TLV
    if i >= len(body) or body[i] != 0x78:
        raise StartTlsRefused("not an LDAP extended response")
    i += 1
    i += 1 + (body[i] & 0x7F if body[i] & 0x80 else 0)  # skip the response length
    if body[i : i + 2] != b"\x0a\x01":
        raise StartTlsRefused("a malformed LDAP extended response")
    result = body[i + 2]
    if result != 0:
        raise StartTlsRefused(f"the LDAP server refused StartTLS (resultCode {result})")


PROTOCOLS: dict[str, Callable[[socket.socket], None]] = {
    "smtp": smtp,
    "imap": imap,
    "postgres": postgres,
    "ldap": ldap,
}
