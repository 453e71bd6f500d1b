"""Unit: the STARTTLS openings, each against a scripted peer on a socketpair.

SMTP and PostgreSQL also run against real servers in test_check.py; IMAP and LDAP
have no real server in the test bed, so their byte-level exchanges are pinned here.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from certagent import starttls


def converse(script: list[tuple[bytes | None, bytes]], client: Callable[[socket.socket], None]):
    """The peer expects each `want` (None: nothing) and then sends `reply`."""
    ours, theirs = socket.socketpair()
    ours.settimeout(2)
    theirs.settimeout(2)
    seen: list[bytes] = []

    def peer() -> None:
        with theirs:
            for want, reply in script:
                if want is not None:
                    got = b""
                    while len(got) < len(want):
                        chunk = theirs.recv(len(want) - len(got))
                        if not chunk:
                            return
                        got += chunk
                    seen.append(got)
                theirs.sendall(reply)

    thread = threading.Thread(target=peer)
    thread.start()
    try:
        with ours:
            client(ours)
    finally:
        thread.join(5)
    return seen


def test_imap_starttls() -> None:
    seen = converse(
        [(None, b"* OK IMAP4rev1 ready\r\n"),
         (b"c1 STARTTLS\r\n", b"* CAPABILITY IMAP4rev1\r\nc1 OK Begin TLS now\r\n")],
        starttls.imap,
    )  # fmt: skip
    assert seen == [b"c1 STARTTLS\r\n"]


def test_imap_refused() -> None:
    with pytest.raises(starttls.StartTlsRefused, match="STARTTLS answered"):
        converse([(None, b"* OK ready\r\n"), (b"c1 STARTTLS\r\n", b"c1 BAD no\r\n")], starttls.imap)


def test_ldap_starttls_success_and_refusal() -> None:
    ok = b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00"
    seen = converse([(starttls.LDAP_STARTTLS, ok)], starttls.ldap)
    assert seen == [starttls.LDAP_STARTTLS]
    refused = b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00"  # protocolError
    with pytest.raises(starttls.StartTlsRefused, match="resultCode 2"):
        converse([(starttls.LDAP_STARTTLS, refused)], starttls.ldap)


def test_ldap_request_is_well_formed_ber() -> None:
    msg = starttls.LDAP_STARTTLS
    assert msg[0] == 0x30 and msg[1] == len(msg) - 2
    assert msg[5] == 0x77 and msg[6] == len(msg) - 7  # [APPLICATION 23] extendedReq
    assert msg[7] == 0x80 and msg[9:] == b"1.3.6.1.4.1.1466.20037"


def test_smtp_without_starttls_offer_is_refused() -> None:
    with pytest.raises(starttls.StartTlsRefused, match="does not offer STARTTLS"):
        converse(
            [(None, b"220 mail ESMTP\r\n"),
             (b"EHLO certagent-check.invalid\r\n", b"250-mail\r\n250 8BITMIME\r\n")],
            starttls.smtp,
        )  # fmt: skip


def test_postgres_without_ssl_is_refused() -> None:
    with pytest.raises(starttls.StartTlsRefused, match="does not accept SSL"):
        converse([(starttls.POSTGRES_SSL_REQUEST, b"N")], starttls.postgres)
