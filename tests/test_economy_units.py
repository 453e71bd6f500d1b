"""Unit: economy after failure (issue #23), socket-free: a certificate issued and not
live is deployed by the operator's next command without a new order; the CA's word
(Retry-After, a breaker) is kept across runs; the duplicate limit; problem documents
read by their type; messages in the operator's terms."""

from __future__ import annotations

import datetime as dt
import json
import os
import textwrap
from pathlib import Path

import pytest
import requests

from certagent import api, castate, config, plan
from certagent.budget import DuplicateLedger, OrderBudget
from certagent.model import (
    CertSpec,
    CertState,
    Config,
    Http01Webroot,
    KeyType,
    Policy,
    Release,
    Undeployed,
)
from certagent.store import Store
from certagent.system import RunResult

from .fakes import LocalIssuer

T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SPEC = CertSpec("www", ("www.example.test",), KeyType.EC_P256, Http01Webroot(Path("/srv")))


def live(days_left: float = 60) -> Release:
    return Release("www", "r1", Path("/x"), SPEC.names, KeyType.EC_P256, T0 - 30 * DAY,
                   T0 + days_left * DAY, "ab" * 32, "CN=CA")  # fmt: skip


def kept(**changes: object) -> Undeployed:
    base: dict[str, object] = dict(
        ref="r2", staged=True, issued=T0 - DAY, names=SPEC.names, key_type=KeyType.EC_P256,
        not_before=T0 - DAY, not_after=T0 + 89 * DAY, profile=None, ca="", reason="hook failed",
    )  # fmt: skip
    base.update(changes)
    return Undeployed(**base)  # type: ignore[arg-type]


FAILING = CertState(consecutive_failures=3, last_attempt=T0 - dt.timedelta(minutes=1),
                    last_outcome="rolled_back", failed_release="r2")  # fmt: skip


def test_a_kept_certificate_is_due_whatever_the_back_off_and_the_cas_word() -> None:
    waiting = FAILING.__class__(**{**FAILING.__dict__, "retry_after": T0 + DAY})
    for state in (FAILING, waiting):
        decision = plan.decide(SPEC, live(), state, Policy(), T0, kept=kept())
        assert decision.due, decision
        assert "not deployed: hook failed" in decision.reason
        assert "no new order" in decision.reason and "certagent deploy www" in decision.reason


def test_force_deploys_the_kept_certificate_instead_of_ordering() -> None:
    decision = plan.decide(SPEC, live(), FAILING, Policy(), T0, force=True, kept=kept())
    assert decision.due and "no new order" in decision.reason and "--new-order" in decision.reason


@pytest.mark.parametrize("changed", [
    {"names": ("other.example.test",)},
    {"key_type": KeyType.RSA_2048},
    {"profile": "shortlived"},
    {"not_after": T0 - dt.timedelta(seconds=1)},  # expired
    {"not_after": T0 + 10 * DAY},  # older than what is live
])  # fmt: skip
def test_a_kept_certificate_for_other_inputs_is_not_used(changed: dict[str, object]) -> None:
    assert not plan.usable(SPEC, kept(**changed), live(), T0)
    decision = plan.decide(SPEC, live(), FAILING, Policy(), T0, kept=kept(**changed))
    assert not decision.due and "backing off" in decision.reason


def test_a_ca_wide_hold_outranks_force_but_not_a_kept_certificate() -> None:
    hold = (T0 + dt.timedelta(hours=1), "the CA asked every client to wait")
    forced = plan.decide(SPEC, live(5), CertState(), Policy(), T0, force=True, hold=hold)
    assert not forced.due and "--force does not override" in forced.reason
    assert forced.renew_at == hold[0]
    deploy = plan.decide(SPEC, live(5), FAILING, Policy(), T0, kept=kept(), hold=hold)
    assert deploy.due  # deploying needs no CA


def test_the_hold_is_kept_never_shortened_and_capped(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    assert castate.read_hold(tmp_path, now) is None
    castate.write_hold(tmp_path, now + dt.timedelta(hours=2), "503 from the CA")
    castate.write_hold(tmp_path, now + dt.timedelta(minutes=5), "a shorter one")
    until, why = castate.read_hold(tmp_path, now) or (None, "")
    assert until == now + dt.timedelta(hours=2) and "503 from the CA" in why
    assert castate.read_hold(tmp_path, now + dt.timedelta(hours=3)) is None
    castate.write_hold(tmp_path, now + dt.timedelta(days=400), "a CA's mistake")
    until, _ = castate.read_hold(tmp_path, now) or (None, "")
    assert until is not None and until <= now + castate.MAX_HOLD
    (tmp_path / castate.HOLD_FILE).write_text("{not json")
    assert castate.read_hold(tmp_path, now) is None  # unreadable: no hold, never a crash


def test_the_breaker_opens_and_closes(tmp_path: Path) -> None:
    assert castate.breaker_open(tmp_path) is None
    castate.open_breaker(tmp_path, T0, "3 answers of HTTP 500")
    assert castate.breaker_open(tmp_path) == "3 answers of HTTP 500"
    castate.close_breaker(tmp_path)
    castate.close_breaker(tmp_path)  # idempotent
    assert castate.breaker_open(tmp_path) is None


def test_the_duplicate_ledger_counts_per_set_of_names(tmp_path: Path) -> None:
    ledger = DuplicateLedger(tmp_path, 5, 7 * 86400)
    names = ("a.example.test", "b.example.test")
    for i in range(5):
        assert ledger.next_allowed(names, T0 + i * dt.timedelta(hours=1)) is None
        ledger.record(names, T0 + i * dt.timedelta(hours=1))
    when = ledger.next_allowed(tuple(reversed(names)), T0 + 5 * dt.timedelta(hours=1))
    assert when == T0 + 7 * DAY  # the oldest of the five leaves the window
    assert ledger.next_allowed(("a.example.test",), T0) is None  # another set of names
    again = DuplicateLedger(tmp_path, 5, 7 * 86400)  # kept across runs
    assert again.next_allowed(names, T0 + 6 * DAY) == T0 + 7 * DAY
    assert again.next_allowed(names, T0 + 7 * DAY + dt.timedelta(seconds=1)) is None


def _lines(path: Path) -> list[object]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def test_the_ledgers_append_a_line_an_order_never_the_whole_file(tmp_path: Path) -> None:
    """10,000 orders in one run cost 10,000 appended lines, not 10,000 rewrites of a
    growing file (quadratic): the file an order is appended to is the same file."""
    budget = OrderBudget(tmp_path, 1000, 3 * 3600)
    ledger = DuplicateLedger(tmp_path, 5, 7 * 86400)
    inodes = set()
    for i in range(30):
        now = T0 + dt.timedelta(seconds=i)
        assert budget.take(now) is None
        ledger.record((f"n{i}.example.test",), now)
        inodes.add(((tmp_path / "orders.jsonl").stat().st_ino,
                    (tmp_path / "duplicates.jsonl").stat().st_ino))  # fmt: skip
    assert len(inodes) == 1
    assert len(_lines(tmp_path / "orders.jsonl")) == 30
    assert [e[1] for e in _lines(tmp_path / "duplicates.jsonl")][-1] == (
        T0 + dt.timedelta(seconds=29)
    ).isoformat()
    assert (tmp_path / "orders.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_torn_or_garbled_ledger_line_costs_that_line_only(tmp_path: Path) -> None:
    """A kill mid-append leaves a torn last line: the next run drops it and rewrites the
    file before it appends (so its own line is never glued to the torn one); lines that
    are not entries are dropped the same way; the budget still holds."""
    budget = OrderBudget(tmp_path, 5, 3600)
    for i in range(3):
        assert budget.take(T0 + dt.timedelta(seconds=i)) is None
    orders = tmp_path / "orders.jsonl"
    with orders.open("ab") as f:
        f.write(b'not json\n123\n["x"]\n' + b"[" * 100000 + b'\n"2026-06-01T00:0')  # junk, torn
    again = OrderBudget(tmp_path, 5, 3600)  # the next run
    assert again.take(T0 + dt.timedelta(seconds=10)) is None  # 4 of 5
    assert again.take(T0 + dt.timedelta(seconds=11)) is None  # 5 of 5
    assert again.take(T0 + dt.timedelta(seconds=12)) == T0 + dt.timedelta(hours=1)
    assert len(_lines(orders)) == 5  # every line an order: the junk and the torn one gone
    ledger = DuplicateLedger(tmp_path, 1, 86400)
    ledger.record(("a.example.test",), T0)
    with (tmp_path / "duplicates.jsonl").open("ab") as f:
        f.write(b'["abc"]\n{"k": 1}\n["abc", "yesterday"]\n[1, "2026-06-01T00:00:00+00:00"]\n["a')
    assert DuplicateLedger(tmp_path, 1, 86400).next_allowed(("a.example.test",), T0) == T0 + DAY
    assert len(_lines(tmp_path / "duplicates.jsonl")) == 1


def test_the_ledgers_of_earlier_builds_are_read_then_replaced(tmp_path: Path) -> None:
    """orders.json and duplicates.json (one JSON array each) still count: read once,
    rewritten as lines (what expired left out), then removed."""
    old = [(T0 - dt.timedelta(hours=2)).isoformat()] + [
        (T0 - dt.timedelta(minutes=m)).isoformat() for m in (30, 20, 10)
    ]
    (tmp_path / "orders.json").write_text(json.dumps(old))
    names = ("a.example.test",)
    key = DuplicateLedger.key(names)
    (tmp_path / "duplicates.json").write_text(
        json.dumps([[key, (T0 - d * DAY).isoformat()] for d in (8, 3, 2)])
    )
    budget = OrderBudget(tmp_path, 4, 3600)
    assert budget.take(T0) is None  # three in the hour, the one two hours ago expired
    assert budget.take(T0) == T0 - dt.timedelta(minutes=30) + dt.timedelta(hours=1)
    assert not (tmp_path / "orders.json").exists()
    assert len(_lines(tmp_path / "orders.jsonl")) == 4
    ledger = DuplicateLedger(tmp_path, 2, 7 * 86400)
    assert ledger.next_allowed(names, T0) == T0 - 3 * DAY + 7 * DAY
    assert not (tmp_path / "duplicates.json").exists()
    assert [e[1] for e in _lines(tmp_path / "duplicates.jsonl")] == [
        (T0 - d * DAY).isoformat() for d in (3, 2)
    ]


def test_an_earlier_builds_ledger_beside_the_new_one_still_counts(tmp_path: Path) -> None:
    """Run by an earlier build after this one (a downgrade and back): both files count,
    merged into one."""
    budget = OrderBudget(tmp_path, 3, 3600)
    assert budget.take(T0) is None
    (tmp_path / "orders.json").write_text(json.dumps([(T0 + dt.timedelta(minutes=1)).isoformat()]))
    again = OrderBudget(tmp_path, 3, 3600)
    assert again.take(T0 + dt.timedelta(minutes=2)) is None  # 3 of 3
    assert again.take(T0 + dt.timedelta(minutes=3)) == T0 + dt.timedelta(hours=1)
    assert not (tmp_path / "orders.json").exists()
    assert len(_lines(tmp_path / "orders.jsonl")) == 3


def test_a_ledger_of_any_bytes_is_read_without_an_error(tmp_path: Path) -> None:
    """Whatever the ledgers hold (random bytes, JSON of the wrong shapes, times without
    a zone), a run reads them, counts what is sound and writes lines it can read back."""
    import random

    rng = random.Random(2812)  # noqa: S311 - a reproducible corpus, not a secret
    shapes = [b'"2026-06-01T00:00:00+00:00"', b'"2026-06-01T00:00:00"', b"[1, 2]", b"{}",
              b'["k", "2026-06-01T00:00:00+00:00"]', b'[null, "x"]', b"1e999", b'"\\ud800"',
              b"\xff\xfe", b"[[[[", b""]  # fmt: skip
    for i in range(200):
        folder = tmp_path / str(i)
        folder.mkdir()
        for name in ("orders.jsonl", "duplicates.jsonl", "orders.json", "duplicates.json"):
            if rng.random() < 0.6:
                pieces = [rng.choice(shapes) if rng.random() < 0.7 else rng.randbytes(12)
                          for _ in range(rng.randrange(0, 6))]  # fmt: skip
                (folder / name).write_bytes(b"\n".join(pieces) + rng.choice([b"", b"\n"]))
        assert OrderBudget(folder, 1000, 3600).take(T0) is None
        ledger = DuplicateLedger(folder, 1000, 86400)
        assert ledger.next_allowed(("a.example.test",), T0) is None
        ledger.record(("a.example.test",), T0)
        assert OrderBudget(folder, 1000, 3600).take(T0) is None  # the next run reads it back
        assert len(_lines(folder / "orders.jsonl")) >= 2
        assert DuplicateLedger(folder, 1, 86400).next_allowed(("a.example.test",), T0)


def test_expired_ledger_lines_are_left_out_once_a_run(tmp_path: Path) -> None:
    budget = OrderBudget(tmp_path, 10, 3600)
    for i in range(4):
        budget.take(T0 + dt.timedelta(minutes=i))
    later = OrderBudget(tmp_path, 10, 3600)
    assert later.take(T0 + dt.timedelta(minutes=62)) is None  # minutes 0 to 2 expired
    assert _lines(tmp_path / "orders.jsonl") == [
        (T0 + dt.timedelta(minutes=m)).isoformat() for m in (3, 62)
    ]


def test_a_link_planted_as_a_ledger_is_replaced_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    account = tmp_path / "account"
    account.mkdir()
    (account / "orders.jsonl").symlink_to(target)
    (account / "duplicates.jsonl").symlink_to(target)
    assert OrderBudget(account, 5, 3600).take(T0) is None
    DuplicateLedger(account, 5, 86400).record(("a.example.test",), T0)
    assert target.read_text() == "precious\n"
    for name in ("orders.jsonl", "duplicates.jsonl"):
        assert not (account / name).is_symlink() and len(_lines(account / name)) == 1
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "orders.jsonl")  # would block a plain open for ever
    assert OrderBudget(fifo, 5, 3600).take(T0) is None
    assert len(_lines(fifo / "orders.jsonl")) == 1


def test_a_failed_command_says_its_own_words_first() -> None:
    result = RunResult(("nginx", "-t"), 1,
                       'nginx: [emerg] unknown directive "ssl_certficate_key" in '
                       "/etc/nginx/sites-enabled/www.conf:7\n", 0.1)  # fmt: skip
    text = result.explain()
    assert text.startswith("nginx: [emerg] unknown directive")
    assert text.endswith("(`nginx -t` exited 1)")


# -- the operator's loop, in-process ------------------------------------------------------


def deploying_config(tmp_path: Path, hook: str, backoff: str = "1h") -> Config:
    (tmp_path / "webroot").mkdir(exist_ok=True)
    return config.parse(textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        policy: {{failure_backoff: {backoff}}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path / "webroot"}}}
            deploy: {{hook: {hook}, endpoints: none, endpoints_reason: unit test}}
        """), tmp_path / "certagent.yaml")  # fmt: skip


@pytest.mark.parametrize("command", ["renew", "deploy", "renew --force"])
def test_after_a_failed_hook_the_next_command_deploys_the_kept_certificate(
    tmp_path: Path, command: str
) -> None:
    issuer = LocalIssuer()
    assert api.exit_status(api.renew(deploying_config(tmp_path, '["true"]'), issuer=issuer)) == 0
    first = Store(tmp_path / "state").current("www")
    broken = deploying_config(tmp_path, '["false"]')
    report = api.renew(broken, force=True, issuer=issuer)
    assert report.results[0].outcome.value == "rolled_back" and issuer.orders == 2
    state = Store(tmp_path / "state").read_state("www")
    assert state.failed_release is not None and "post-run hook failed" in (state.last_error or "")
    (row,) = api.status(broken)
    assert "not deployed: post-run hook failed" in row.reason
    assert "`certagent deploy www` deploys it" in row.reason

    fixed = deploying_config(tmp_path, '["true"]')
    if command == "deploy":
        report = api.deploy(fixed, "www")
    else:
        report = api.renew(fixed, force=command.endswith("--force"), issuer=issuer)
    result = report.results[0]
    assert result.outcome.value == "renewed", result
    assert issuer.orders == 2  # no new order
    now = Store(tmp_path / "state").current("www")
    assert first is not None and now is not None and now.not_after >= first.not_after
    assert now.release_id == result.release and now.release_id != first.release_id
    (row,) = api.status(fixed)
    assert "not deployed" not in row.reason
    assert Store(tmp_path / "state").read_state("www").failed_release is None


def test_new_order_orders_even_with_a_kept_certificate(tmp_path: Path) -> None:
    issuer = LocalIssuer()
    api.renew(deploying_config(tmp_path, '["true"]'), issuer=issuer)
    api.renew(deploying_config(tmp_path, '["false"]'), force=True, issuer=issuer)
    report = api.renew(deploying_config(tmp_path, '["true"]'), issuer=issuer, new_order=True)
    assert report.results[0].outcome.value == "renewed" and issuer.orders == 3


def test_repeated_runs_while_broken_order_nothing_and_keep_few_releases(tmp_path: Path) -> None:
    issuer = LocalIssuer()
    api.renew(deploying_config(tmp_path, '["true"]'), issuer=issuer)
    broken = deploying_config(tmp_path, '["false"]', backoff="0s")
    api.renew(broken, force=True, issuer=issuer)
    for _ in range(8):  # cron, every time retrying the deploy of what was issued
        assert api.renew(broken, issuer=issuer).results[0].outcome.value == "rolled_back"
    assert issuer.orders == 2
    releases = list((tmp_path / "state" / "certs" / "www" / "releases").iterdir())
    assert len(releases) <= 5 + 2  # keep_releases, plus the live and the kept one


def test_a_409_problem_document_is_read_by_its_type() -> None:
    from acme import errors, messages

    from certagent.acmeclient.problems import about_replaces as _about_replaces
    from certagent.acmeclient.problems import code as _code
    from certagent.acmeclient.transport import Network as _Network

    def response(status: int, body: dict[str, object], **headers: str) -> requests.Response:
        resp = requests.Response()
        resp.status_code = status
        resp._content = json.dumps(body).encode()
        resp.headers.update({"Content-Type": "application/problem+json", **headers})
        return resp

    doc = {"type": "urn:ietf:params:acme:error:alreadyReplaced", "detail": "done already"}
    with pytest.raises(messages.Error) as caught:
        _Network._check_response(response(409, doc))
    assert _code(caught.value) == "alreadyReplaced" and _about_replaces(caught.value)
    assert caught.value.code is None  # the library does not know the type; we do
    with pytest.raises(errors.ConflictError):  # an existing account: Location, no problem
        _Network._check_response(response(409, {}, Location="https://ca/acct/1"))
    as_400 = {"type": "urn:ietf:params:acme:error:alreadyReplaced", "detail": "x"}
    with pytest.raises(messages.Error) as caught:
        _Network._check_response(response(400, as_400))
    assert _about_replaces(caught.value)


def test_a_run_killed_before_its_flip_leaves_its_release_to_the_next_run(tmp_path: Path) -> None:
    """Killed between recording the pending swap and the flip: the next run deploys
    that release (it was issued), it does not order another."""
    from dataclasses import replace

    issuer = LocalIssuer()
    api.renew(deploying_config(tmp_path, '["true"]'), issuer=issuer)
    api.renew(deploying_config(tmp_path, '["false"]'), force=True, issuer=issuer)
    store = Store(tmp_path / "state")
    state = store.read_state("www")
    live = store.current("www")
    assert state.failed_release is not None and live is not None
    issued = store.find("www", state.failed_release)
    assert issued is not None
    # what a kill right after `pending` was written, before the flip, leaves behind
    store.write_state("www", replace(state, pending=(issued.release_id, live.release_id),
                                     failed_release=None, consecutive_failures=0))  # fmt: skip
    report = api.renew(deploying_config(tmp_path, '["true"]'), issuer=issuer)
    assert report.results[0].outcome.value == "renewed", report.results[0]
    assert issuer.orders == 2  # nothing ordered again
    now = store.current("www")
    assert now is not None and now.fingerprint_sha256 == issued.fingerprint_sha256
