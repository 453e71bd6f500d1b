"""The configs a release carries: each template rendered into `rendered/<file>`,
pointing at the release's own key and chain, so the config test sees exactly what
will go live and one flip of `current` swaps the certificate and its configs at once.

Side effects: none (templates are read through `render`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import layout, render
from ..model import CertSpec


def render_configs(
    spec: CertSpec,
    release_dir: Path,
    current_dir: Path,
    template_dirs: Sequence[Path],
    stage: str = "production",
) -> dict[str, bytes]:
    """The release's rendered files, keyed by their path inside the release."""
    if spec.deploy is None:
        return {}
    context: dict[str, Any] = {
        "name": spec.name,
        "names": list(spec.names),
        "release_id": release_dir.name,
        "release_dir": str(release_dir),
        "current_dir": str(current_dir),
        "cert": str(release_dir / layout.CERT),
        "chain": str(release_dir / layout.CHAIN),
        "fullchain": str(release_dir / layout.FULLCHAIN),
        "key": str(release_dir / layout.KEY),
        "bundle": str(release_dir / layout.BUNDLE),
        "stage": stage,
        "vars": dict(spec.deploy.vars),
    }
    return {
        f"{layout.RENDERED}/{t.dest.name}": render.render(t.template, context, template_dirs)
        .encode()
        for t in spec.deploy.templates
    }
