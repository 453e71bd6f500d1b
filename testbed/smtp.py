"""A real SMTP server (aiosmtpd) that requires STARTTLS, run as its own process.

    python -m testbed.smtp --port P --cert C --key K --maildir D [--user U --password W]

Received messages are written to D, one file each (for notification tests).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Maildir:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        path = self.folder / f"{uuid.uuid4().hex}.eml"
        header = (
            f"X-Envelope-From: {envelope.mail_from}\nX-Envelope-To: {','.join(envelope.rcpt_tos)}\n"
        )
        path.write_bytes(header.encode() + envelope.content)
        return "250 OK"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    maildir = Path(args.maildir)
    maildir.mkdir(parents=True, exist_ok=True)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == args.user
            and data.password.decode() == args.password
        )
        return AuthResult(success=ok)

    extra: dict[str, Any] = {}
    if args.user:
        extra = {"authenticator": authenticate, "auth_require_tls": True}
    controller = Controller(
        Maildir(maildir),
        hostname="127.0.0.1",
        port=args.port,
        tls_context=tls,
        require_starttls=True,
        **extra,
    )
    controller.start()
    loop = asyncio.new_event_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.run_until_complete(stop)
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
