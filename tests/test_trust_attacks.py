"""Security: root acts only on what root owns (issue #12). An unprivileged user
(`nobody`) plants links and files where it can; certagent, as root, refuses or
does not follow them. Needs root (it switches to `nobody` with runuser)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from certagent import api, cli, config, keepalived, system
from certagent.challenges import WebrootSolver
from certagent.errors import ChallengeFailed, StoreError
from certagent.store import Store

from .fakes import LocalIssuer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants files as another user")
NOBODY = 65534


def as_nobody(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", *argv], check=True)


def open_to_nobody(folder: Path) -> None:
    """Let `nobody` reach folder (the pytest temp dirs are root-only)."""
    for p in [folder, *folder.parents]:
        if p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o011)


def cfg_text(tmp_path: Path, state: Path) -> str:
    (tmp_path / "webroot").mkdir(exist_ok=True)
    return textwrap.dedent(f"""\
        state_dir: {state}
        ca: {{directory: https://ca.invalid/dir}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path / "webroot"}}}
        """)


@pytest.mark.parametrize("how", ["owned by nobody", "world-writable", "group-writable",
                                 "parent owned by nobody"])  # fmt: skip
def test_untrusted_state_dir_is_refused(
    tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    if how == "parent owned by nobody":
        parent = tmp_path / "nobodys"
        parent.mkdir()
        os.chown(parent, NOBODY, NOBODY)
        state = parent / "state"
        state.mkdir(mode=0o700)
    else:
        state.mkdir(mode=0o700)
    if how == "owned by nobody":
        os.chown(state, NOBODY, NOBODY)
    elif how == "world-writable":
        state.chmod(0o777)
    elif how == "group-writable":
        os.chown(state, 0, NOBODY)
        state.chmod(0o770)
    path = tmp_path / "c.yaml"
    path.write_text(cfg_text(tmp_path, state))
    code = cli.main(["-c", str(path), "renew"])
    err = capsys.readouterr().err
    assert code == 1 and "refusing to use the state directory" in err, err
    assert not (state / "lock").exists() and not (state / "certs").exists()


def test_planted_lock_and_history_links_are_not_followed(tmp_path: Path) -> None:
    cfg = config.parse(cfg_text(tmp_path, tmp_path / "state"), tmp_path / "c.yaml")
    api.renew(cfg, issuer=LocalIssuer())
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    store = Store(cfg.state_dir)
    (cfg.state_dir / "lock").unlink()
    (cfg.state_dir / "lock").symlink_to(victim)
    with pytest.raises(StoreError, match="cannot open the lock"):
        api.renew(cfg, issuer=LocalIssuer())
    assert victim.read_text() == "precious\n"  # not truncated, no pid written

    (cfg.state_dir / "lock").unlink()
    history = cfg.state_dir / "history.jsonl"
    history.unlink()
    history.symlink_to(victim)
    report = api.renew(cfg, issuer=LocalIssuer())  # the run itself still completes
    assert report.results[0].outcome.value == "skipped"
    assert victim.read_text() == "precious\n"
    with pytest.raises(StoreError):
        list(store.history_backwards())


@pytest.mark.parametrize("where", [".well-known", ".well-known/acme-challenge"])
def test_webroot_symlinks_planted_by_the_web_user_are_not_followed(
    tmp_path: Path, where: str
) -> None:
    webroot = tmp_path / "webroot"
    webroot.mkdir()
    os.chown(webroot, NOBODY, NOBODY)
    open_to_nobody(tmp_path)
    target = tmp_path / "cron.d"
    target.mkdir()
    if where == ".well-known":
        as_nobody("ln", "-s", str(target), str(webroot / ".well-known"))
    else:
        as_nobody("mkdir", str(webroot / ".well-known"))
        as_nobody("ln", "-s", str(target), str(webroot / ".well-known" / "acme-challenge"))
    solver = WebrootSolver(webroot)
    with pytest.raises(ChallengeFailed, match="symlink"):
        solver.present("www.example.test", "tok_en-1", "tok_en-1.thumb")
    solver.cleanup("www.example.test", "tok_en-1")
    assert list(target.iterdir()) == []


def test_planted_token_file_link_is_replaced_not_followed(tmp_path: Path) -> None:
    webroot = tmp_path / "webroot"
    challenge = webroot / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    for p in (webroot, webroot / ".well-known", challenge):
        os.chown(p, NOBODY, NOBODY)
    open_to_nobody(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    as_nobody("ln", "-s", str(victim), str(challenge / "tok"))
    WebrootSolver(webroot).present("www.example.test", "tok", "tok.thumb")
    assert victim.read_text() == "precious\n"
    assert (challenge / "tok").read_text() == "tok.thumb" and not (challenge / "tok").is_symlink()


def test_missing_webroot_is_an_error_not_created(tmp_path: Path) -> None:
    with pytest.raises(ChallengeFailed, match="does not exist"):
        WebrootSolver(tmp_path / "typo").present("www.example.test", "tok", "tok.thumb")
    assert not (tmp_path / "typo").exists()


def test_templates_from_a_directory_another_user_can_write_are_refused(tmp_path: Path) -> None:
    from certagent import render

    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "x.j2").write_text("ok")
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(render.RenderError, match="refusing templates"):
        render.render("x.j2", {}, [folder])


def test_sandboxed_templates_reach_no_python_internals(tmp_path: Path) -> None:
    from certagent import render

    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "x.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(render.RenderError, match=r"sandbox|unsafe|attribute"):
        render.render("x.j2", {}, [folder])


def _fake_keepalived(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A root process that ignores keepalived's dump signals and writes nothing, so only
    what the attacker plants could ever be read."""
    numbers = [int(system.run(["keepalived", f"--signum={s}"], 5, {}).output) for s in
               ("JSON", "DATA")]  # fmt: skip
    code = (
        "import signal, time\n"
        f"for s in {numbers}: signal.signal(s, signal.SIG_IGN)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    (tmp_path / "keepalived.pid").write_text(f"{proc.pid}\n")
    return proc


def _planted_dump() -> tuple[str, str]:
    state = [{"stats": {}, "data": {"iname": "VI_1", "state": 1, "vrid": 51,
              "effective_priority": 100, "master_priority": 200, "vips": ["10.0.0.100/24"],
              "adver_int": 100}}]  # fmt: skip
    return json.dumps(state), "VRRP Topology:\n"


@pytest.mark.parametrize("dump_dir", ["owned by nobody", "sticky, planted continuously"])
def test_planted_keepalived_dumps_are_refused(tmp_path: Path, dump_dir: str) -> None:
    folder = tmp_path / "dump"
    folder.mkdir()
    open_to_nobody(tmp_path)
    if dump_dir == "owned by nobody":
        os.chown(folder, NOBODY, NOBODY)
    else:
        folder.chmod(0o1777)
    body, data = _planted_dump()
    planter = subprocess.Popen([
        "runuser", "-u", "nobody", "--", "sh", "-c",
        f"while :; do printf '%s' '{body}' > {folder}/keepalived.json 2>/dev/null; "
        f"printf '%s' '{data}' > {folder}/keepalived.data 2>/dev/null; sleep 0.01; done",
    ], start_new_session=True)  # fmt: skip
    fake = _fake_keepalived(tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not (folder / "keepalived.data").exists():  # the planter has planted
            assert time.monotonic() < deadline, "the planter never planted"
            time.sleep(0.01)
        where = keepalived.Where("this node", (), str(tmp_path / "keepalived.pid"), str(folder))
        # Never read as a dump: refused as planted, or (when the planter lost the race
        # against our rm at the deadline) no dump at all; a healthy BACKUP would parse.
        refused = r"refusing the keepalived dump|wrote no dump"
        with pytest.raises(keepalived.KeepalivedError, match=refused):
            keepalived.dump(where, system.run, 0.5)
    finally:
        os.killpg(planter.pid, signal.SIGKILL)  # runuser and the shell loop it started
        fake.kill()
        planter.wait()
        fake.wait()


def part_text(tmp_path: Path) -> str:
    return (f"evil: {{names: [evil.example.test], challenge: {{type: http-01, webroot: "
            f"{tmp_path / 'webroot'}}}, deploy: {{hook: [sh, -c, 'id > /tmp/owned'], "
            "endpoints: none, endpoints_reason: test}}\n")  # fmt: skip


@pytest.mark.parametrize("how", ["part world-writable", "part owned by nobody",
                                 "part group-writable", "folder world-writable",
                                 "folder owned by nobody", "main world-writable",
                                 "main a link of nobody's", "a link of nobody's on the way",
                                 "part a FIFO",
                                 "part a dangling link"])  # fmt: skip
def test_a_configuration_another_user_can_change_is_refused(
    tmp_path: Path, how: str, run
) -> None:
    """The configuration names the hooks root runs: a main file, a folder of parts or a
    part that `nobody` could change is a configuration error (78) naming it, before
    anything is run; the same files, root's and closed, are valid."""
    open_to_nobody(tmp_path)
    parts = tmp_path / "certificates.d"
    parts.mkdir()
    main = tmp_path / "certagent.yaml"
    main.write_text(cfg_text(tmp_path, tmp_path / "state") + "certificates_dir: certificates.d\n")
    part = parts / "evil.yaml"
    part.write_text(part_text(tmp_path))
    assert run("-c", str(main), "config", "validate").code == 0
    named, used = part, main
    if how == "part world-writable":
        part.chmod(0o666)
    elif how == "part owned by nobody":
        os.chown(part, NOBODY, -1)
    elif how == "part group-writable":
        os.chown(part, -1, NOBODY)
        part.chmod(0o664)
    elif how == "folder world-writable":
        parts.chmod(0o777)
        named = parts
    elif how == "folder owned by nobody":
        os.chown(parts, NOBODY, -1)
        named = parts
    elif how == "main world-writable":
        main.chmod(0o666)
        named = main
    elif how == "main a link of nobody's":
        (tmp_path / "open").mkdir(mode=0o1777)
        (tmp_path / "open").chmod(0o1777)  # sticky, like /tmp: nobody may add a link
        used = named = tmp_path / "open" / "link.yaml"
        as_nobody("ln", "-s", str(main), str(used))
    elif how == "a link of nobody's on the way":  # root's link -> nobody's link -> main
        (tmp_path / "open").mkdir(mode=0o1777)
        (tmp_path / "open").chmod(0o1777)
        hop = tmp_path / "open" / "hop.yaml"
        as_nobody("ln", "-s", str(main), str(hop))
        used = tmp_path / "entry.yaml"
        used.symlink_to(hop)
        named = tmp_path / "open"  # a config's own folder: no one else may write it
    elif how == "part a FIFO":
        part.unlink()
        os.mkfifo(part)  # read as a file, it would hang the run
    else:  # its certificates are said missing, not silently dropped
        part.unlink()
        part.symlink_to(tmp_path / "moved-away.yaml")
    result = run("-c", str(used), "config", "validate")
    assert result.code == 78, result
    assert str(named) in result.err and "internal error" not in result.err, result.err
    assert run("-c", str(used), "renew").code == 78
    assert not (tmp_path / "state").exists()  # refused before anything was touched


def test_a_part_linked_to_roots_file_and_a_root_group_writable_file_are_trusted(
    tmp_path: Path, run
) -> None:
    """What an operator does that others cannot change: a link (root's) to a file root
    keeps elsewhere (a config management checkout), and a file the root group writes."""
    parts = tmp_path / "certificates.d"
    parts.mkdir()
    main = tmp_path / "certagent.yaml"
    main.write_text(cfg_text(tmp_path, tmp_path / "state") + "certificates_dir: certificates.d\n")
    kept = tmp_path / "checkout"
    kept.mkdir()
    (kept / "evil.yaml").write_text(part_text(tmp_path))
    (parts / "evil.yaml").symlink_to(kept / "evil.yaml")
    os.chown(main, -1, 0)
    main.chmod(0o664)
    assert run("-c", str(main), "config", "validate").code == 0
