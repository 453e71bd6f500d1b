"""The environment a test or hook runs in, and whether it does something different for
each certificate (then it never runs once for a group). certbot's and lego's variable
names are set too, so their deploy hooks work unchanged.

Side effects: none.
"""

from __future__ import annotations

import re

from . import layout
from .model import CertSpec, Command, Release

PLACEHOLDERS = ("{config}", "{release}", "{name}")  # replaced per certificate in argv
_GROUP_SAFE = ("CERTAGENT_ACTION", "CERTAGENT_STAGE", "CERTAGENT_GROUP")


def per_certificate(command: Command | None) -> bool:
    """Does the command do something different for each certificate? Then it cannot
    run once for a group: a placeholder in its argv (each member's resolves otherwise),
    or a shell text that reads one certificate's variables (`$CERTAGENT_FULLCHAIN`,
    certbot's `$RENEWED_LINEAGE`, lego's `$LEGO_CERT_PATH`...). A script file's
    contents are not read: such a hook that copies files needs `deploy.group: false`."""
    if command is None:
        return False
    text = " ".join(command.argv)
    if any(p in text for p in PLACEHOLDERS):
        return True
    for var in re.findall(r"\$\{?([A-Z_]+)", text):
        if var.startswith(("CERTAGENT_", "RENEWED_", "LEGO_")) and var not in _GROUP_SAFE:
            return True
    return False


def hook_env(
    command: Command, spec: CertSpec, release: Release, action: str, stage: str
) -> dict[str, str]:
    """The child's environment: the command's own `env:`, then certagent's variables,
    with the names certbot's and lego's deploy hooks read, so they work unchanged."""
    path = release.path
    return {
        **dict(command.env),
        "CERTAGENT_CERT_NAME": spec.name,
        "CERTAGENT_NAMES": " ".join(spec.names),
        "CERTAGENT_RELEASE_DIR": str(path),
        "CERTAGENT_FULLCHAIN": str(path / layout.FULLCHAIN),
        "CERTAGENT_KEY": str(path / layout.KEY),
        "CERTAGENT_ACTION": action,
        "CERTAGENT_STAGE": stage,
        # certbot --deploy-hook: a directory holding cert/chain/fullchain/privkey.pem
        "RENEWED_LINEAGE": str(path),
        "RENEWED_DOMAINS": " ".join(spec.names),
        # lego run --run-hook (its certificate file is the full chain)
        "LEGO_CERT_DOMAIN": spec.names[0],
        "LEGO_CERT_PATH": str(path / layout.FULLCHAIN),
        "LEGO_CERT_KEY_PATH": str(path / layout.KEY),
    }
