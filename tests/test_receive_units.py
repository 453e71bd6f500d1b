"""Unit: the peer protocol is versioned (issue #15): a release of another schema is
refused on the receiving side with both versions named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certagent import __version__, api, config, failover
from certagent.errors import UsageError
from certagent.model import Outcome
from testbed import pki

from .fakes import minimal_yaml


def test_a_release_of_another_schema_is_refused(tmp_path: Path) -> None:
    cfg = config.parse(
        minimal_yaml(tmp_path, cert="    deploy: {endpoints: none, endpoints_reason: unit test}\n"),
        tmp_path / "c.yaml",
    )
    payload = {"schema": 99, "certagent": "9.9.9", "name": "www", "key": "", "fullchain": ""}
    with pytest.raises(UsageError) as exc:
        api.receive(cfg, "www", json.dumps(payload).encode())
    text = str(exc.value)
    assert "certagent 9.9.9" in text and f"certagent {__version__}" in text
    assert "sent release schema 99" in text


def _two(tmp_path: Path) -> config.Config:
    calls = tmp_path / "calls.log"
    deploy = (
        "    deploy:\n"
        "      endpoints: none\n"
        "      endpoints_reason: unit test\n"
        "      test: {shell: 'echo test >> " + str(calls) + "'}\n"
        '      hook: {shell: \'echo "reload $CERTAGENT_GROUP" >> ' + str(calls) + "'}\n"
    )
    text = minimal_yaml(tmp_path, cert=deploy)
    text += "  two:\n    names: [two.example.test]\n"
    text += f"    challenge: {{type: http-01, webroot: {tmp_path}}}\n" + deploy
    return config.parse(text, tmp_path / "c.yaml")


def _release(name: str, dns: str, ca: pki.Authority) -> dict[str, object]:
    cert, key = pki.issue(ca, [dns])
    return {"name": name, "release": "r1", "ca": "unit", "key": key.decode(),
            "fullchain": (cert + ca.pem()).decode()}  # fmt: skip


def test_a_group_handed_over_is_deployed_with_one_test_and_one_reload(tmp_path: Path) -> None:
    cfg = _two(tmp_path)
    ca = pki.make_ca()
    releases = [_release("www", "www.example.test", ca), _release("two", "two.example.test", ca)]
    payload = json.dumps({"schema": 2, "certagent": __version__, "releases": releases})
    report = api.receive(cfg, ["www", "two"], payload.encode())
    assert [r.outcome for r in report.results] == [Outcome.RENEWED, Outcome.RENEWED]
    assert (tmp_path / "calls.log").read_text().splitlines() == ["test", "reload www two"]
    # handed over again (a retried rollout): already live, nothing reloaded
    again = api.receive(cfg, ["www", "two"], payload.encode())
    assert [r.outcome for r in again.results] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("names", "payload", "says"),
    [
        (["www", "two"], {"schema": 2, "releases": [{"name": "two"}, {"name": "www"}]},
         "expected releases of www, two"),
        (["www"], {"schema": 2, "releases": {"name": "www"}}, "not a list of releases"),
        (["www"], {"schema": 1, "name": "two", "key": "", "fullchain": ""},
         "expected releases of www"),
        (["www", "two"], {"schema": 2, "releases": [{"name": "www"}, {"name": "two"}]},
         "'key'"),
        (["www", "www"], {"schema": 2, "releases": []}, "each certificate handed over once"),
        (["nope"], {"schema": 1, "name": "nope"}, "unknown certificate"),
    ],
)  # fmt: skip
def test_a_group_payload_must_name_exactly_what_was_asked(
    tmp_path: Path, names: list[str], payload: dict[str, object], says: str
) -> None:
    cfg = _two(tmp_path)
    with pytest.raises(UsageError) as exc:
        api.receive(cfg, names, json.dumps(payload).encode())
    assert says in str(exc.value)
    assert not (tmp_path / "calls.log").exists()


def test_payload_limits() -> None:
    with pytest.raises(UsageError, match="more than"):
        failover.read_payload(["a"], b" " * (failover.MAX_PAYLOAD + 1))
    with pytest.raises(UsageError, match="at most"):
        failover.read_payload([f"c{i}" for i in range(failover.MAX_GROUP + 1)], b"{}")


def test_a_big_group_goes_to_the_peer_in_several_pushes() -> None:
    small = [{"name": f"c{i}", "key": "k" * 100} for i in range(failover.MAX_GROUP + 7)]
    assert [len(c) for c in failover._chunks(small)] == [failover.MAX_GROUP, 7]
    big = [{"name": f"c{i}", "key": "k" * (failover.MAX_GROUP_PAYLOAD // 5)} for i in range(5)]
    chunks = list(failover._chunks(big))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [e["name"] for c in chunks for e in c] == [f"c{i}" for i in range(5)]


def test_in_a_group_a_certificate_this_node_does_not_know_fails_alone(tmp_path: Path) -> None:
    """The MASTER's config has a certificate this node's lacks: that one fails (the
    MASTER does not swap it); the rest of the group is deployed."""
    cfg = _two(tmp_path)
    ca = pki.make_ca()
    releases = [_release("www", "www.example.test", ca), _release("gone", "gone.example.test", ca)]
    payload = json.dumps({"schema": 2, "certagent": __version__, "releases": releases})
    report = api.receive(cfg, ["www", "gone"], payload.encode())
    outcomes = {r.name: (r.outcome, r.error_code) for r in report.results}
    assert outcomes == {
        "www": (Outcome.RENEWED, None),
        "gone": (Outcome.FAILED_BEFORE_SWAP, "not-configured"),
    }
    assert "unknown certificate(s) gone" in str(report.results[1].error)
    assert (tmp_path / "calls.log").read_text().splitlines() == ["test", "reload "]
