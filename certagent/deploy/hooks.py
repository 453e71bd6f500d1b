"""The operator's commands (config test, post-run hook) as they run: placeholders
filled, the environment set (certbot's and lego's variable names too, so their deploy
hooks work unchanged), and whether one does something different for each certificate
(then it never runs once for a group).

Side effects: subprocesses, through the injected runner.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from .. import layout
from ..model import CertSpec, Command, Release
from ..system import RunResult
from .ports import Runner, need

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


def run_command(
    run: Runner,
    command: Command,
    spec: CertSpec,
    release: Release,
    action: str,
    stage: str,
    wrap: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
) -> RunResult:
    """Run a config test or hook for one certificate's release (`wrap`: an argv prefix,
    the gate's candidate view; `extra`: more environment, e.g. CERTAGENT_GROUP)."""
    deploy = need(spec)
    config = (
        str(release.path / layout.RENDERED / deploy.templates[0].dest.name)
        if deploy.templates
        else ""
    )
    argv = [
        a.replace("{config}", config).replace("{release}", str(release.path))
        .replace("{name}", spec.name)
        for a in command.argv
    ]  # fmt: skip
    env = {**hook_env(command, spec, release, action, stage), **(extra or {})}
    result = run([*wrap, *argv], command.timeout, env)
    # The report names the operator's command, never the gate's wrapper around it.
    return replace(result, argv=tuple(argv)) if wrap else result
