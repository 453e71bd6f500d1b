"""acme2certifier's WSGI app under wsgiref with threads, for the test bed; run by the
acme2certifier venv's Python: `python a2c_server.py PORT LOG`. Every JWS payload sent to
it is decoded and appended to LOG as one JSON line {path, payload}, so a test can see
what a client really sent (newOrder's `replaces`, `profile`). ACME_SRV_CONFIGFILE
names the configuration (read when the app is imported)."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from acme2certifier.share.acme2certifier_wsgi import application

LOCK = threading.Lock()


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    port, log = int(sys.argv[1]), sys.argv[2]

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size) if size else b""
        environ["wsgi.input"] = io.BytesIO(body)
        payload = None
        try:
            raw = json.loads(body)["payload"]
            payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)) or b"null")
        except (ValueError, KeyError, TypeError):
            pass
        with LOCK, open(log, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "method": environ["REQUEST_METHOD"],
                        "path": environ.get("PATH_INFO"),
                        "payload": payload,
                    }
                )
                + "\n"
            )
        return application(environ, start_response)

    httpd = make_server("127.0.0.1", port, recording, server_class=Server, handler_class=Quiet)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
