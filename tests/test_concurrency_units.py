"""Unit: certificates are worked on concurrently (issue #16): orders overlap up to
`ca.max_orders` and never beyond, a failing certificate in the middle holds back no
other, deploys never overlap, and the report, history and state stay per certificate
in the configured order. The issuer is a fake behind the pipeline's Issuer port."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import pytest

from certagent import api, config
from certagent.challenges import Solver
from certagent.errors import ConfigError, OrderFailed
from certagent.model import Outcome

from .fakes import LocalIssuer


class CountingIssuer(LocalIssuer):
    """Counts orders in flight; the first `together` orders wait for each other (a
    barrier, so concurrency is shown, not timed); `broken` names are refused."""

    def __init__(self, together: int, broken: set[str]) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.in_flight = self.most = self.calls = 0
        self.barrier = threading.Barrier(together, timeout=30)
        self.broken = broken

    def issue(self, csr_pem: bytes, solver: Solver, options: object = None) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.calls += 1
            first = self.calls <= self.barrier.parties
        try:
            if first:  # a broken barrier is asserted on by the test
                with contextlib.suppress(threading.BrokenBarrierError):
                    self.barrier.wait()
            from cryptography import x509

            names = x509.load_pem_x509_csr(csr_pem).extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
            first = names.value.get_values_for_type(x509.DNSName)[0]
            if first.split(".")[0] in self.broken:
                raise OrderFailed(self.label, f"order for {first} refused")
            return super().issue(csr_pem, solver, options)
        finally:
            with self.lock:
                self.in_flight -= 1


def fleet(tmp_path: Path, count: int, concurrency: int, max_orders: int, hook: str = "") -> str:
    (tmp_path / "www").mkdir(exist_ok=True)
    lines = [
        f"state_dir: {tmp_path / 'state'}",
        f"ca: {{directory: https://ca.invalid/dir, max_orders: {max_orders}}}",
        f"policy: {{concurrency: {concurrency}, failure_backoff: 0}}",
        "certificates:",
    ]
    for i in range(count):
        lines += [
            f"  c{i:02d}:",
            f"    names: [c{i:02d}.example.test]",
            f"    challenge: {{type: http-01, webroot: {tmp_path / 'www'}}}",
        ]
        if hook:
            lines += [f"    deploy: {{hook: {hook}, endpoints: none, endpoints_reason: test}}"]
    return "\n".join(lines) + "\n"


def test_orders_overlap_up_to_the_cap_and_a_failure_holds_back_no_other(tmp_path: Path) -> None:
    cfg = config.parse(fleet(tmp_path, 12, concurrency=8, max_orders=3), tmp_path / "c.yaml")
    issuer = CountingIssuer(together=3, broken={"c05"})
    report = api.renew(cfg, issuer=issuer)
    assert not issuer.barrier.broken  # three orders really were in flight at once
    assert issuer.most == 3  # and never more than ca.max_orders, with 8 workers
    assert [r.name for r in report.results] == [f"c{i:02d}" for i in range(12)]
    outcomes = {r.name: r.outcome for r in report.results}
    assert outcomes.pop("c05") is Outcome.FAILED_BEFORE_SWAP
    assert set(outcomes.values()) == {Outcome.RENEWED}
    history = [
        json.loads(x) for x in (tmp_path / "state" / "history.jsonl").read_text().split("\n") if x
    ]
    names = [c["name"] for c in history[-1]["certificates"]]
    assert names == [f"c{i:02d}" for i in range(12)]  # the audit line in the configured order


def test_concurrency_one_works_through_them_one_by_one(tmp_path: Path) -> None:
    cfg = config.parse(fleet(tmp_path, 4, concurrency=1, max_orders=4), tmp_path / "c.yaml")
    issuer = CountingIssuer(together=1, broken=set())
    report = api.renew(cfg, issuer=issuer)
    assert issuer.most == 1
    assert all(r.outcome is Outcome.RENEWED for r in report.results)


def _hook(tmp_path: Path) -> Path:
    """A hook that fails if another deploy's hook is running (a lock file taken with
    O_EXCL), and logs the certificate and the group it runs for."""
    hook = tmp_path / "hook.sh"
    hook.write_text(
        "#!/bin/sh\nset -e\n"
        f"( set -C; : > {tmp_path}/busy ) || exit 9\n"
        f'echo "$CERTAGENT_CERT_NAME:$CERTAGENT_GROUP" >> {tmp_path}/order\n'
        f"rm {tmp_path}/busy\n"
    )
    hook.chmod(0o755)
    return hook


def test_certificates_sharing_a_hook_are_reloaded_once(tmp_path: Path) -> None:
    hook = _hook(tmp_path)
    cfg = config.parse(fleet(tmp_path, 8, 6, 4, hook=f"[{hook}]"), tmp_path / "c.yaml")
    report = api.renew(cfg, issuer=CountingIssuer(together=4, broken=set()))
    assert [r.outcome for r in report.results] == [Outcome.RENEWED] * 8
    group = " ".join(f"c{i:02d}" for i in range(8))
    assert (tmp_path / "order").read_text().split("\n")[:-1] == [f"c00:{group}"]


def test_deploys_never_overlap(tmp_path: Path) -> None:
    """`group: false`: one hook per certificate, each alone, with 6 workers ordering."""
    hook = _hook(tmp_path)
    text = fleet(tmp_path, 8, 6, 4, hook=f"[{hook}]").replace(
        "endpoints: none", "group: false, endpoints: none"
    )
    report = api.renew(config.parse(text, tmp_path / "c.yaml"), issuer=CountingIssuer(4, set()))
    assert [r.outcome for r in report.results] == [Outcome.RENEWED] * 8, [
        r.error for r in report.results
    ]
    assert sorted((tmp_path / "order").read_text().split()) == [f"c{i:02d}:" for i in range(8)]


@pytest.mark.parametrize("value", [0, 65, "x"])
def test_concurrency_is_bounded(tmp_path: Path, value: object) -> None:
    text = fleet(tmp_path, 1, 1, 1).replace("concurrency: 1", f"concurrency: {value}")
    with pytest.raises(ConfigError, match=r"policy\.concurrency"):
        config.parse(text, tmp_path / "c.yaml")


def test_the_order_budget_defers_what_exceeds_it_and_holds_across_runs(tmp_path: Path) -> None:
    """ca.max_new_orders: beyond it a certificate is skipped (not failed) with the time a
    slot frees; the next run, still inside the window, orders nothing more."""
    text = fleet(tmp_path, 5, concurrency=1, max_orders=1).replace(
        "max_orders: 1}", "max_orders: 1, max_new_orders: 3, new_orders_window: 1h}"
    )
    cfg = config.parse(text, tmp_path / "c.yaml")
    issuer = CountingIssuer(together=1, broken=set())
    report = api.renew(cfg, issuer=issuer)
    outcomes = [r.outcome for r in report.results]
    assert outcomes == [Outcome.RENEWED] * 3 + [Outcome.SKIPPED] * 2
    assert issuer.calls == 3
    deferred = report.results[3]
    assert "ca.max_new_orders" in deferred.decision.reason and deferred.error is None
    assert api.exit_status(report) == 0  # a deferral is not a failure
    again = api.renew(cfg, issuer=issuer)
    assert issuer.calls == 3 and [r.outcome for r in again.results][3:] == [Outcome.SKIPPED] * 2


@pytest.mark.parametrize(
    ("hook", "grouped"),
    [
        ("{shell: 'echo \"$CERTAGENT_ACTION $CERTAGENT_GROUP\" >> LOG'}", True),
        ("{shell: 'echo \"$CERTAGENT_CERT_NAME\" >> LOG'}", False),
        ("{shell: 'echo \"${RENEWED_LINEAGE}\" >> LOG'}", False),
        ("{argv: [/bin/sh, -c, 'echo {name} >> LOG']}", False),
        ("{argv: [/bin/sh, -c, 'echo $LEGO_CERT_PATH >> LOG']}", False),
    ],
)
def test_a_hook_that_does_something_per_certificate_is_never_grouped(
    tmp_path: Path, hook: str, grouped: bool
) -> None:
    """A placeholder or one certificate's variable in a test or hook: resolved per
    member, so running it once for the group would skip the other members' work."""
    text = fleet(tmp_path, 3, 2, 2, hook=hook.replace("LOG", str(tmp_path / "calls")))
    report = api.renew(config.parse(text, tmp_path / "c.yaml"), issuer=CountingIssuer(2, set()))
    assert [r.outcome for r in report.results] == [Outcome.RENEWED] * 3
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == (1 if grouped else 3), calls


@pytest.mark.parametrize(
    ("output", "named"),
    [
        ("nginx: [emerg] invalid root in /etc/nginx/sites/b.conf:9", True),  # nginx
        ("[ALERT] parsing [/etc/nginx/sites/b.conf:12] : unknown keyword", True),  # haproxy
        ("AH00526: Syntax error on line 9 of /etc/nginx/sites/b.conf:", True),  # apache
        ("in /srv/rendered/b.conf:3", True),  # the candidate inside the release
        ("in /old/etc/nginx/sites/b.conf:9", False),  # another file ending the same way
        ("in /etc/nginx/sites/b.conf.bak:9", False),
        ("nginx: configuration file /etc/nginx/sites/b.conf test failed", False),  # no line
    ],
)
def test_a_group_test_failure_blames_the_member_whose_file_it_names(
    output: str, named: bool
) -> None:
    from types import SimpleNamespace

    from certagent.deploy import gate
    from certagent.model import DeploySpec, TemplateSpec

    deploy = DeploySpec(templates=(TemplateSpec("site.conf.j2", Path("/etc/nginx/sites/b.conf")),))
    member = SimpleNamespace(
        spec=SimpleNamespace(deploy=deploy),
        release=SimpleNamespace(path=Path("/srv")),
    )
    assert gate._named(member, output) is named  # type: ignore[arg-type]


def test_the_standalone_listener_takes_a_validation_burst() -> None:
    """A CA validates every name of a run at once (from several vantage points): the
    http-01 listener's accept queue holds such a burst (the kernel's own figure, read
    with ss) and every request is answered with its own key authorization."""
    import http.client
    import socket
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from certagent.challenges import StandaloneSolver

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    solver = StandaloneSolver("127.0.0.1", port)
    try:
        for i in range(100):
            solver.present(f"n{i}.test", f"tok{i}", f"tok{i}.thumb")
        listing = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(listing[2]) >= 128, listing  # LISTEN Recv-Q Send-Q(=backlog) ...

        def get(i: int) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", f"/.well-known/acme-challenge/tok{i}")
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(get, range(100)))
        assert answers == [(200, f"tok{i}.thumb".encode()) for i in range(100)]
    finally:
        solver.close()
