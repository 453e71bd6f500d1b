"""Acceptance: rehearsal on a real step-ca (staging) before a real pebble (production),
both deploying to real nginx instances. step-ca validates http-01 on port 80 of the
name, inside the session's private network namespace."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certagent.render import shipped_template_dir
from certagent.store import Store
from testbed.nginx import Nginx
from testbed.pebble import Pebble
from testbed.proc import free_port
from testbed.stepca import StepCA

from .test_deploy_nginx import NAME, pebble_root, served  # noqa: F401 - fixture re-used

pytestmark = pytest.mark.integration


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx").start()
    yield server
    server.stop()


@pytest.fixture
def stage_nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx-staging").start()
    yield server
    server.stop()


class Bed:
    """Production (pebble + nginx) and staging (step-ca + a second nginx), one config."""

    def __init__(
        self, tmp: Path, pebble: Pebble, root: Path, stepca: StepCA, prod: Nginx, stage: Nginx
    ) -> None:
        self.tmp, self.pebble, self.root, self.stepca = tmp, pebble, root, stepca
        self.prod, self.stage = prod, stage
        self.path = tmp / "certagent.yaml"
        self.store = Store(tmp / "state")
        self.staging_store = Store(tmp / "state" / "staging")
        self.stage_log = tmp / "stages.log"
        self.templates = tmp / "templates"
        self.templates.mkdir()
        for server in (prod, stage):
            (server.prefix / "conf.d").mkdir()

    def hook(self, server: Nginx, breaks: str = "") -> dict[str, Any]:
        """Reload nginx, recording CERTAGENT_STAGE; `breaks` runs first on deploy."""
        reload = " ".join(server.reload_argv)
        before = f'if [ "$CERTAGENT_ACTION" = deploy ]; then {breaks}; fi; ' if breaks else ""
        script = f'echo "$CERTAGENT_STAGE $CERTAGENT_ACTION" >> {self.stage_log}; {before}{reload}'
        return {"shell": script, "timeout": 10}

    def write(
        self,
        *,
        prod_hook: dict[str, Any] | None = None,
        stage_hook: dict[str, Any] | None = None,
        staging_ca: dict[str, Any] | None = None,
        staging_extra: dict[str, Any] | None = None,
    ) -> Path:
        def nginx_vars(server: Nginx) -> dict[str, Any]:
            return {**server.template_vars(), "extra_http": [f"include {server.prefix}/conf.d/*;"]}

        cfg = {
            "state_dir": str(self.tmp / "state"),
            "template_dirs": [str(self.templates)],
            "ca": {
                "directory": self.pebble.directory_url,
                "agree_tos": True,
                "trust_roots": [str(self.pebble.tls_root)],
            },
            "policy": {"failure_backoff": 0},
            "staging": {
                "ca": {
                    "directory": self.stepca.directory_url,
                    "trust_roots": [str(self.stepca.root)],
                },
                **(staging_extra or {}),
            },
            "certificates": {
                "www": {
                    "names": [NAME],
                    "challenge": {
                        "type": "http-01",
                        "standalone": {"address": "127.0.0.1", "port": self.pebble.http_port},
                    },
                    "deploy": {
                        "templates": [
                            {"template": "nginx/nginx.conf.j2", "dest": str(self.prod.conf)}
                        ],
                        "vars": nginx_vars(self.prod),
                        "test": self.prod.test_argv,
                        "hook": prod_hook or self.hook(self.prod),
                        "endpoints": [f"127.0.0.1:{self.prod.port}"],
                        "verify_timeout": 3,
                        "trust_roots": [str(self.root)],
                    },
                    "staging": {
                        "dir": str(self.stage.prefix),
                        "vars": nginx_vars(self.stage),
                        "test": self.stage.test_argv,
                        "hook": stage_hook or self.hook(self.stage),
                        "endpoints": [f"127.0.0.1:{self.stage.port}"],
                        "verify_timeout": 3,
                        # step-ca validates port 80 of the name, always
                        "challenge": {
                            "type": "http-01",
                            "standalone": {"address": "127.0.0.1", "port": 80},
                        },
                    },
                }
            },
        }
        if staging_ca is not None:
            cfg["staging"]["ca"] = staging_ca  # type: ignore[index]
        self.path.write_text(json.dumps(cfg, indent=1))
        return self.path

    def steps(self, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {s["step"]: s for s in report["certificates"][0]["steps"]}

    def production_untouched(self) -> None:
        assert self.store.current("www") is None
        assert not (self.store.cert_dir("www") / "releases").exists()
        assert served(self.prod.port, None) == bootstrap_fp(self.prod)


def bootstrap_fp(server: Nginx) -> str:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate((server.prefix / "bootstrap.pem").read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@pytest.fixture
def bed(
    tmp_path: Path,
    pebble: Pebble,
    pebble_root: Path,  # noqa: F811
    stepca: StepCA,
    prod: Nginx,
    stage_nginx: Nginx,
) -> Bed:
    return Bed(tmp_path, pebble, pebble_root, stepca, prod, stage_nginx)


def test_a_good_hook_is_rehearsed_on_step_ca_then_production_is_deployed(bed: Bed, run) -> None:
    result = run("-c", str(bed.write()), "--json", "renew")
    assert result.code == 0, result.out + result.err
    report = json.loads(result.out)
    names = [s["step"] for s in report["certificates"][0]["steps"]]
    # The rehearsal runs the whole deploy path first, then production does the same.
    assert names[: names.index("rehearse") + 1] == [
        "precheck",  # production's config test of the candidate, before any order
        "staging:precheck",
        "staging:order",
        "staging:stage",
        "staging:preflight",
        "staging:swap",
        "staging:reload",
        "staging:verify",
        "rehearse",
    ]
    assert names[names.index("rehearse") + 1 :][:2] == ["order", "stage"]
    assert names[-1] == "verify"

    staging_release = bed.staging_store.current("www")
    assert staging_release is not None and staging_release.ca == bed.stepca.directory_url
    assert served(bed.stage.port, bed.stepca.root) == staging_release.fingerprint_sha256
    live = bed.store.current("www")
    assert live is not None and live.ca == bed.pebble.directory_url
    assert served(bed.prod.port, bed.root) == live.fingerprint_sha256
    # Hooks saw their stage; templates rendered for it.
    assert bed.stage_log.read_text().split("\n")[:2] == ["staging deploy", "production deploy"]
    assert "(staging)" in bed.stage.conf.read_text()
    assert "(production)" in bed.prod.conf.read_text()


BREAKERS = {
    # the seed incident: a hook rolls out a config the web server refuses, so it keeps
    # serving the old certificate (and would fail over to nothing)
    "config-rollout": "printf 'server {{ listen 127.0.0.1:1 ssl; }}\\n' > {prefix}/conf.d/broken",
    # a hook that takes the web server down
    "stops-server": "nginx -p {prefix} -c {prefix}/nginx.conf -s stop",
}


@pytest.mark.parametrize("breaker", sorted(BREAKERS))
def test_a_hook_that_breaks_the_web_server_fails_in_rehearsal(bed: Bed, run, breaker: str) -> None:
    def breaking(server: Nginx) -> dict[str, Any]:
        return bed.hook(server, BREAKERS[breaker].format(prefix=server.prefix))

    path = bed.write(prod_hook=breaking(bed.prod), stage_hook=breaking(bed.stage))
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 1, result.out + result.err
    report = json.loads(result.out)
    cert = report["certificates"][0]
    assert cert["outcome"] == "failed_before_swap"
    assert cert["error_code"] == "rehearsal-failed"
    steps = bed.steps(report)
    assert steps["staging:order"]["ok"] and steps["staging:preflight"]["ok"]
    assert not steps["rehearse"]["ok"]
    assert "rehearsal on the staging CA failed at staging:" in cert["error"]
    assert "order" not in steps  # production was never ordered
    bed.production_untouched()
    assert "production" not in bed.stage_log.read_text()


def test_the_failed_rehearsal_is_printed_for_people(bed: Bed, run) -> None:
    hook = bed.hook(bed.stage, "echo 'nginx: [emerg] cannot load certificate' >&2; exit 1")
    result = run("-c", str(bed.write(stage_hook=hook)), "renew")
    assert result.code == 1
    assert "rehearsal on the staging CA failed at staging:reload" in result.err
    assert "cannot load certificate" in result.out + result.err  # the hook's own output


def test_step_ca_unreachable_fails_closed_by_default(bed: Bed, run) -> None:
    dead = {"directory": f"https://127.0.0.1:{free_port()}/acme/acme/directory", "timeout": 2}
    result = run("-c", str(bed.write(staging_ca=dead)), "--json", "renew")
    assert result.code == 1, result.out + result.err
    cert = json.loads(result.out)["certificates"][0]
    assert "cannot reach the CA" in cert["error"]
    assert "staging.on_unreachable: fail" in cert["error"]
    bed.production_untouched()


def test_step_ca_unreachable_can_be_allowed_by_policy(bed: Bed, run) -> None:
    dead = {"directory": f"https://127.0.0.1:{free_port()}/acme/acme/directory", "timeout": 2}
    path = bed.write(staging_ca=dead, staging_extra={"on_unreachable": "proceed"})
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 0, result.out + result.err
    steps = bed.steps(json.loads(result.out))
    assert steps["rehearse"]["ok"]
    assert "NOT rehearsed" in steps["rehearse"]["detail"]
    assert steps["rehearse"]["override"] == "staging-unreachable"
    audit = bed.store.last_record("renew")  # the audit names the skipped safety
    assert audit is not None
    (override,) = audit["certificates"][0]["overrides"]  # type: ignore[index]
    assert override["override"] == "staging-unreachable" and override["step"] == "rehearse"
    live = bed.store.current("www")
    assert live is not None and served(bed.prod.port, bed.root) == live.fingerprint_sha256


def test_a_passing_rehearsal_is_remembered_until_an_input_changes(bed: Bed, run) -> None:
    path = bed.write()
    assert run("-c", str(path), "renew").code == 0
    # Nothing changed: a forced production renewal does not rehearse again.
    result = run("-c", str(path), "--json", "renew", "--force")
    assert result.code == 0, result.out + result.err
    steps = bed.steps(json.loads(result.out))
    assert "staging:order" not in steps
    assert "not repeated" in steps["rehearse"]["detail"]

    # A changed hook forces a rehearsal.
    hook = bed.hook(bed.stage)
    hook["timeout"] = 11
    path = bed.write(stage_hook=hook)
    steps = bed.steps(json.loads(run("-c", str(path), "--json", "renew", "--force").out))
    assert "staging:order" in steps and steps["rehearse"]["ok"]

    # So does a changed template (a user copy shadowing the shipped one).
    (bed.templates / "nginx").mkdir()
    src = shipped_template_dir() / "nginx" / "nginx.conf.j2"
    shutil.copy(src, bed.templates / "nginx" / "nginx.conf.j2")
    with (bed.templates / "nginx" / "nginx.conf.j2").open("a") as f:
        f.write("# local change\n")
    steps = bed.steps(json.loads(run("-c", str(path), "--json", "renew", "--force").out))
    assert "staging:order" in steps and steps["rehearse"]["ok"]

    # ...and then it is remembered again.
    steps = bed.steps(json.loads(run("-c", str(path), "--json", "renew", "--force").out))
    assert "staging:order" not in steps


def test_rehearse_command_runs_alone_and_never_touches_production(bed: Bed, run) -> None:
    path = bed.write()
    result = run("-c", str(path), "rehearse")
    assert result.code == 0, result.out + result.err
    assert "www: rehearsal passed" in result.out
    assert re.search(r"^  verify +ok", result.out, re.M)
    staging_release = bed.staging_store.current("www")
    assert staging_release is not None
    assert served(bed.stage.port, bed.stepca.root) == staging_release.fingerprint_sha256
    bed.production_untouched()
    assert not (bed.store.root / "certs" / "www").exists()

    # A broken staging hook: exit 1, and production still untouched.
    path = bed.write(stage_hook=bed.hook(bed.stage, "exit 3"))
    result = run("-c", str(path), "rehearse")
    assert result.code == 1
    assert "REHEARSAL FAILED" in result.err
    bed.production_untouched()
