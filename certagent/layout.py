"""Where the store keeps a certificate: the one place that spells the layout, so that
a reader that must stay light (the keepalived track script) need not import the store.

    <state_dir>/certs/<name>/current -> releases/<id>
"""

from __future__ import annotations

import os
from pathlib import Path

CERTS = "certs"
CURRENT = "current"


def cert_dir(state_dir: Path, name: str) -> Path:
    return state_dir / CERTS / name


def current_link(state_dir: Path, name: str) -> Path:
    return cert_dir(state_dir, name) / CURRENT


def deployed(state_dir: Path, name: str) -> bool:
    """Has the certificate ever gone live here (a `current` link, even a broken one)?"""
    return os.path.lexists(current_link(state_dir, name))
