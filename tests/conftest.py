"""Shared fixtures: a real pebble per session, config files, running the CLI."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certagent import cli
from testbed import netns
from testbed.pebble import Pebble
from testbed.stepca import BINARY as STEP_CA
from testbed.stepca import StepCA

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Run the whole session in a private network namespace (as root): step-ca validates
    http-01 on port 80, which is then ours, and nothing on the host is reachable."""
    if netns.can_enter():
        netns.enter_private_netns()


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: run `make deps` (the Makefile installs it)")


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """A real pebble with its default 5 % bad-nonce rejection and 50 % authz reuse."""
    _need("pebble")
    server = Pebble(tmp_path_factory.mktemp("pebble"), nonce_reject=5, blocklist=("blocked.test",))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stepca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepCA]:
    """A real step-ca (the staging CA) with a CA made from scratch; http-01 on port 80."""
    if not netns.can_enter():
        pytest.skip("step-ca validates on port 80: needs root for a private network namespace")
    if not STEP_CA.is_file():
        pytest.fail(f"{STEP_CA} is missing: run `make step-ca` (`make test` builds it)")
    _need("pebble-challtestsrv")
    server = StepCA(tmp_path_factory.mktemp("step-ca"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_pebble(tmp_path: Path) -> Iterator[type[Pebble]]:
    """Start extra pebbles with their own settings; all are stopped after the test."""
    _need("pebble")
    started: list[Pebble] = []

    class _Started(Pebble):
        def start(self) -> Pebble:
            started.append(self)
            return super().start()

    yield _Started
    for server in started:
        server.stop()


def certs_yaml(
    pebble: Pebble,
    certs: dict[str, list[str]],
    *,
    port: int | None = None,
    key_type: str = "ec-p256",
) -> str:
    lines = ["certificates:"]
    for name, names in certs.items():
        lines += [
            f"  {name}:",
            f"    names: [{', '.join(names)}]",
            f"    key_type: {key_type}",
            "    challenge:",
            "      type: http-01",
            f"      standalone: {{address: 127.0.0.1, port: {port or pebble.http_port}}}",
        ]
    return "\n".join(lines) + "\n"


def write_config(
    tmp_path: Path,
    pebble: Pebble,
    certs: dict[str, list[str]] | None = None,
    *,
    directory: str | None = None,
    port: int | None = None,
    extra: str = "",
    key_type: str = "ec-p256",
) -> Path:
    certs = certs or {"www": ["www.example.test", "example.test"]}
    path = tmp_path / "certagent.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "ca:\n"
        f"  directory: {directory or pebble.directory_url}\n"
        "  contact: [ops@example.test]\n"
        "  agree_tos: true\n"
        f"  trust_roots: [{pebble.tls_root}]\n"
        "  timeout: 5\n"
        "policy:\n"
        "  order_timeout: 20\n"
        f"{extra}" + certs_yaml(pebble, certs, port=port, key_type=key_type)
    )
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the CLI in-process, as `certagent ARGS`, and capture what it prints."""

    def _run(*args: str) -> Result:
        code = cli.main(list(args))
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return _run


WHEELHOUSE = ROOT / "build" / "wheelhouse"


def offline_pip_env() -> dict[str, str]:
    """pip inside the tests' network namespace: only the wheels `make wheelhouse` made."""
    if not (WHEELHOUSE / ".done").is_file():
        pytest.fail(f"{WHEELHOUSE} is missing: run `make wheelhouse` (`make test` does)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip


def run_subprocess(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "certagent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@dataclass
class OffsetClock:
    """The system clock moved by an offset: renewal dates arrive without waiting."""

    offset: dt.timedelta

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
