"""keepalived dumps and the readiness rules, on dumps captured from a real pair.

tests/data/keepalived-{master,backup}.dump are the dump script's output from the
cluster in testbed/cluster.py (n1 MASTER, priority 150; n2 BACKUP, priority 100).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from certagent import config as config_mod
from certagent import keepalived
from certagent.errors import ConfigError
from certagent.keepalived import Expect, Instance, KeepalivedError, VrrpState, Where
from certagent.system import RunResult

DATA = Path(__file__).parent / "data"


def load(which: str) -> Instance:
    return keepalived.parse((DATA / f"keepalived-{which}.dump").read_text().strip())["VI_1"]


def test_parse_reads_state_priority_vips_vrid_advert_age_and_scripts() -> None:
    master, backup = load("master"), load("backup")
    assert master.state is VrrpState.MASTER and backup.state is VrrpState.BACKUP
    assert (master.priority, backup.priority, backup.master_priority) == (150, 100, 150)
    assert master.vips == backup.vips == frozenset({"10.77.0.10/24"})
    assert master.vrid == backup.vrid == 51
    assert master.src_ip == "10.77.0.11" and backup.master_router == "10.77.0.11"
    assert backup.advert_age is not None and 0 <= backup.advert_age < 1
    assert backup.scripts == {"certagent_health": "GOOD"}  # track files are not scripts
    assert master.advert_int == 0.1


def test_a_faulty_instance_has_no_advert_timing() -> None:
    text = (DATA / "keepalived-backup.dump").read_text().strip()
    text = text.replace('"state":1,', '"state":3,')
    text = text.replace("Read timeout = 1", "Read timeout = DISABLED (1")
    inst = keepalived.parse(text)["VI_1"]
    assert inst.state is VrrpState.FAULT and inst.advert_age is None


@pytest.mark.parametrize(
    "text",
    ["", "@@now 1\n@@json\nnot json\n@@data\n", "@@now 1\n@@json\n[]\n@@data\n"],
)
def test_unreadable_dumps_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        keepalived.parse(text)


def test_a_ready_pair_has_no_problems() -> None:
    master, backup = load("master"), load("backup")
    expect = Expect("VI_1", frozenset({"10.77.0.10"}))
    inst, problems = keepalived.local_problems({"VI_1": master}, expect)
    assert inst == master and problems == []
    assert keepalived.peer_problems({"VI_1": backup}, master, expect, "peer") == []


def test_every_reason_the_peer_could_not_take_over_is_listed() -> None:
    master = load("master")
    peer = replace(
        load("backup"),
        vrid=52,
        vips=frozenset({"10.77.0.99/24"}),
        priority=150,
        advert_age=5.0,
        master_router="10.77.0.13",
        master_priority=90,
        scripts={"chk": "BAD"},
    )
    problems = keepalived.peer_problems({"VI_1": peer}, master, Expect("VI_1"), "peer x")
    text = "\n".join(problems)
    for expected in (
        "VRID 52, this node 51",
        "VIPs {10.77.0.99/24}, this node {10.77.0.10/24}",
        "priority 150 is not lower than this node's 150",
        "last heard an advert 5.0 s ago (limit 1 s)",
        "hears 10.77.0.13 as master, not this node (10.77.0.11)",
        "hears master priority 90",
        "track script(s) chk not GOOD",
    ):
        assert expected in text, text
    assert all(p.startswith("peer x: ") for p in problems)


def test_a_peer_in_fault_or_without_the_instance_is_refused() -> None:
    master = load("master")
    fault = replace(load("backup"), state=VrrpState.FAULT, advert_age=None)
    assert keepalived.peer_problems({"VI_1": fault}, master, Expect("VI_1"), "p") == [
        "p: VI_1 is FAULT, not BACKUP"
    ]
    assert (
        "no VRRP instance VI_1 (it has VI_2)"
        in keepalived.peer_problems({"VI_2": fault}, master, Expect("VI_1"), "p")[0]
    )


def test_this_node_must_be_master_with_the_configured_vips() -> None:
    backup = load("backup")
    _, problems = keepalived.local_problems(
        {"VI_1": backup}, Expect("VI_1", frozenset({"1.2.3.4"}))
    )
    assert problems == [
        "this node's VI_1 is BACKUP, not MASTER",
        "this node's VI_1 has VIPs {10.77.0.10}, the config says {1.2.3.4}",
    ]


def test_a_shell_prefix_gets_one_quoted_string_and_a_plain_prefix_the_argv() -> None:
    command = ["sh", "-c", "echo '$x'; exit 3", "name", "/a dir/pid"]
    ssh = Where("peer", ("ssh", "root@h"), "/p", "/d", quote=True)
    argv = ssh.argv(command)
    assert argv[:2] == ["ssh", "root@h"] and shlex.split(argv[2]) == command
    assert Where("peer", ("salt-call", "--local"), "/p", "/d").argv(command)[2:] == command
    assert Where("here", (), "/p", "/d").argv(command) == command


class FakeRun:
    """Stands in for system.run behind the keepalived.Run port."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.calls: list[list[str]] = []

    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        env: Mapping[str, str],
        stdin: bytes | None = None,
        limit: int = 0,
    ) -> RunResult:
        self.calls.append(list(argv))
        return self.result


@pytest.mark.parametrize(
    ("code", "timed_out", "output", "message"),
    [
        (
            3,
            False,
            "no process 42 (from /run/k.pid)",
            "peer: keepalived is not running (no process",
        ),
        (5, False, "pid 42 wrote no dump into /tmp", "peer: keepalived did not answer within 2 s"),
        (None, True, "", "peer: no answer within 9 s"),
        (255, False, "ssh: connect to host h port 22: No route to host", "No route to host"),
        (0, False, "garbage", "peer: unreadable keepalived dump"),
    ],
)
def test_dump_failures_name_the_node_and_the_cause(
    code: int | None, timed_out: bool, output: str, message: str
) -> None:
    run = FakeRun(RunResult(("ssh",), code, output, 9.0, timed_out))
    where = Where("peer", ("ssh", "h"), "/run/k.pid", "/tmp", quote=True)
    with pytest.raises(KeepalivedError) as err:
        keepalived.dump(where, run, 2.0)
    assert message in str(err.value)
    assert run.calls[0][:2] == ["ssh", "h"]


def _config(failover: str) -> str:
    return (
        "ca: {directory: https://ca.example/dir}\n"
        "certificates: {www: {names: [www.example.test], "
        "challenge: {type: http-01, standalone: {port: 80}}}}\n" + failover
    )


def test_failover_config_defaults_and_quoting() -> None:
    cfg = config_mod.parse(
        _config(
            "failover:\n  keepalived:\n    instance: VI_1\n    address: 10.0.0.11\n"
            "    vips: [10.0.0.10/24]\n"
            "    peer: {command: [ssh, -o, BatchMode=yes, root@10.0.0.12], address: 10.0.0.12}\n"
        ),
        Path("/etc/certagent/certagent.yaml"),
    )
    k = cfg.failover
    assert k is not None
    assert (k.instance, k.address, k.vips, k.pid_file) == (
        "VI_1",
        "10.0.0.11",
        ("10.0.0.10",),
        "/run/keepalived.pid",
    )
    assert k.peer.quote is True and k.peer.certagent == ("certagent",)


def test_failover_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        config_mod.parse(
            _config(
                "failover:\n  keepalived:\n    instance: VI-1\n    address: 10.0.0.11\n"
                "    on_backup: maybe\n    vips: [not-an-ip]\n"
                "    peer: {command: [], address: 10.0.0.11}\n"
            ),
            Path("/x.yaml"),
        )
    text = str(err.value)
    for expected in (
        "failover.keepalived.instance",
        "[A-Za-z0-9_]",
        "failover.keepalived.on_backup",
        "failover.keepalived.vips",
        "failover.keepalived.peer.command",
    ):
        assert expected in text, text


def test_health_does_not_fail_the_node_over_a_config_error(run: Any, tmp_path: Path) -> None:
    """Both nodes usually share the config: failing both track scripts at once would take
    the VIP away over a typo. `renew` reports config errors (exit 78)."""
    bad = tmp_path / "certagent.yaml"
    bad.write_text("ca: {directory: nope}\n")
    result = run("-c", str(bad), "health")
    assert result.code == 0
    assert "not judging" in result.err and str(bad) in result.err


def _two_instances(which: str, second_state: int, second_priority: int) -> str:
    """A captured dump with a second instance VI_2 (another VRID and VIP) whose state
    is `second_state`: a node that is MASTER of one VIP and BACKUP of the other."""
    import json as _json

    text = (DATA / f"keepalived-{which}.dump").read_text().strip()
    head, rest = text.split("\n@@json\n", 1)
    body, data = rest.split("\n@@data\n", 1)
    items = _json.loads(body)
    other = _json.loads(_json.dumps(items[0]))
    d = other["data"]
    vip = "10.77.0.20/24 dev eth0 scope global"
    d.update(iname="VI_2", vrid=52, state=second_state, effective_priority=second_priority,
             base_priority=second_priority, vips=[vip])  # fmt: skip
    block = data[data.index(" VRRP Instance = VI_1") :]
    block = block.replace("VI_1", "VI_2", 1)
    return f"{head}\n@@json\n{_json.dumps([*items, other])}\n@@data\n{data}\n{block}"


class PairRun:
    """This node's dump for a local argv, the peer's for one behind the ssh prefix."""

    def __init__(self, local: str, peer: str) -> None:
        self.local, self.peer = local, peer

    def __call__(self, argv: Sequence[str], timeout: float, env: Mapping[str, str],
                 stdin: bytes | None = None, limit: int = 0) -> RunResult:  # fmt: skip
        text = self.peer if argv[0] == "ssh" else self.local
        return RunResult(tuple(argv), 0, text, 0.01)


def test_each_certificate_follows_its_own_vrrp_instance() -> None:
    """Issue #15: one pair, two instances (one per VIP); each certificate is gated by
    its own, so this node orders for the VIP it holds and skips the other."""
    from certagent.failover import Failover
    from certagent.model import CertSpec, Http01Standalone, KeyType

    cfg = config_mod.parse(
        _config(
            "failover:\n  keepalived:\n    instance: VI_1\n    address: 10.77.0.11\n"
            "    vips: [10.77.0.10/24]\n    instances: {VI_2: {vips: [10.77.0.20/24]}}\n"
            "    peer: {command: [ssh, root@10.77.0.12], address: 10.77.0.12}\n"
        ),
        Path("/x.yaml"),
    )
    assert cfg.failover is not None and cfg.failover.instances == {"VI_2": ("10.77.0.20",)}
    # this node: MASTER of VI_1, BACKUP of VI_2; the peer: the other way round
    local = _two_instances("master", 1, 100)
    peer = _two_instances("backup", 2, 150)
    failover = Failover(cfg.failover, PairRun(local, peer))
    challenge = Http01Standalone("0.0.0.0", 80)  # noqa: S104
    www = CertSpec("www", ("www.example.test",), KeyType.EC_P256, challenge)
    api = replace(www, name="api", names=("api.example.test",), failover_instance="VI_2")
    assert failover.may_order(www) is None  # master of VI_1, the peer ready for it
    skipped = failover.may_order(api)
    assert skipped is not None and "BACKUP of VI_2" in skipped


def test_a_certificate_naming_an_unknown_instance_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        config_mod.parse(
            "ca: {directory: https://ca.example/dir}\n"
            "certificates: {www: {names: [www.example.test], failover_instance: VI_9, "
            "challenge: {type: http-01, standalone: {port: 80}}}}\n"
            "failover:\n  keepalived:\n    instance: VI_1\n    address: 10.0.0.11\n"
            "    peer: {command: [ssh, root@10.0.0.12], address: 10.0.0.12}\n",
            Path("/x.yaml"),
        )
    assert "'VI_9' is not a configured keepalived instance" in str(err.value)


class SettlingRun:
    """The peer's track script is FAULT for the first `bad` looks at it (its health
    check probed the server as it reloaded), GOOD after; or keepalived is gone."""

    def __init__(self, bad: int, stopped: bool = False) -> None:
        self.local = (DATA / "keepalived-master.dump").read_text()
        self.peer = (DATA / "keepalived-backup.dump").read_text()
        self.bad, self.stopped, self.looks = bad, stopped, 0

    def __call__(self, argv: Sequence[str], timeout: float, env: Mapping[str, str],
                 stdin: bytes | None = None, limit: int = 0) -> RunResult:  # fmt: skip
        if argv[0] != "ssh":
            return RunResult(tuple(argv), 0, self.local, 0.01)
        self.looks += 1
        if self.stopped:
            return RunResult(tuple(argv), 1, "keepalived is not running", 0.01)
        text = self.peer.replace("Status = GOOD", "Status = BAD", 1) if (
            self.looks <= self.bad) else self.peer  # fmt: skip
        return RunResult(tuple(argv), 0, text, 0.01)


class TickClock:
    """Time passes only when slept."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> Any:
        import datetime as dt

        return dt.datetime(2026, 12, 5, tzinfo=dt.UTC)

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.mark.parametrize(("bad", "stopped", "ready"), [(0, False, True), (6, False, True),
                                                       (1000, False, False), (0, True, False)])
def test_the_peer_is_given_its_reload_s_moment_before_the_master_swaps(
    bad: int, stopped: bool, ready: bool
) -> None:
    """Issue #15 under load: right after the peer took a release, its track script may
    be FAULT for a moment (its health check probed the server as it reloaded). Readiness
    is looked at again for up to `settle`; a script still not GOOD then, or any other
    problem (keepalived stopped), refuses the swap, the latter at once."""
    from certagent.errors import GateRefused
    from certagent.failover import Failover, FailoverPeer
    from certagent.model import CertSpec, CertState, Http01Standalone, KeyType, Release
    from certagent.steps import Steps

    assert "Status = GOOD" in (DATA / "keepalived-backup.dump").read_text()
    cfg = config_mod.parse(
        _config(
            "failover:\n  keepalived:\n    instance: VI_1\n    address: 10.77.0.11\n"
            "    max_advert_age: 1h\n    settle: 5s\n"
            "    peer: {command: [ssh, root@10.77.0.12], address: 10.77.0.12}\n"
        ),
        Path("/x.yaml"),
    )
    assert cfg.failover is not None and cfg.failover.settle == 5.0
    run, clock = SettlingRun(bad, stopped), TickClock()
    failover = Failover(cfg.failover, run)
    peer = FailoverPeer(failover, True, lambda d: None, clock)  # type: ignore[arg-type,return-value]
    spec = CertSpec("www", ("www.example.test",), KeyType.EC_P256, Http01Standalone("::", 80))
    release = Release("www", "r1", Path("/x"), spec.names, KeyType.EC_P256,
                      clock.now(), clock.now(), "ab", "CN")  # fmt: skip
    from certagent.deploy.ports import Member

    member = Member(spec, release, None, CertState(), Steps(clock))
    if ready:
        peer._still_ready([member])
    else:
        with pytest.raises(GateRefused):
            peer._still_ready([member])
    step = member.steps.results[-1]
    assert (step.step, step.ok) == ("peer-ready", ready), step
    if stopped:
        assert run.looks == 1 and clock.t == 0  # not a reload's moment: refused at once
    elif not ready:
        assert 5.0 <= clock.t < 5.5 and "not GOOD" in step.detail  # waited out `settle`
    else:
        assert run.looks == bad + 1
