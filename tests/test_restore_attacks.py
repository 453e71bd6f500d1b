"""Security: restore as an attacker would try it (issue #12). Crafted, truncated,
partial, tampered, oversized and escaping archives are refused with exit 64, nothing
is changed and nothing is left behind; a good archive comes back with its modes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from certagent import api, cli, config
from certagent.index import INDEX_FILE

from .fakes import LocalIssuer

Members = list[tuple[tarfile.TarInfo, bytes | None]]


def setup_state(tmp_path: Path) -> tuple[Path, Path]:
    """A config, a state dir with two releases, and a backup of it."""
    (tmp_path / "webroot").mkdir(exist_ok=True)
    cfg_path = tmp_path / "etc" / "certagent.yaml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(
        textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path / "webroot"}}}
        """)
    )
    cfg = config.load(cfg_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, force=True, issuer=issuer)
    archive = tmp_path / "good.tgz"
    assert cli.main(["-c", str(cfg_path), "backup", str(archive)]) == 0
    return cfg_path, archive


def read_members(archive: Path) -> Members:
    out: Members = []
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isfile() else None
            out.append((m, f.read() if f else None))
    return out


def write_members(dest: Path, members: Members) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def edit_manifest(members: Members, change: Callable[[dict[str, object]], None]) -> Members:
    info, data = members[0]
    assert data is not None
    manifest = json.loads(data)
    change(manifest)
    return [(info, json.dumps(manifest).encode()), *members[1:]]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
        if not p.is_symlink() and p.name != "lock"  # the lock is never backed up
        and not p.name.startswith(INDEX_FILE)  # nor the index: a cache, rebuilt
    }


def restore(cfg_path: Path, archive: Path, *extra: str, capsys: pytest.CaptureFixture[str]
            ) -> tuple[int, str]:  # fmt: skip
    code = cli.main(["-c", str(cfg_path), "restore", *extra, str(archive)])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def assert_untouched(tmp_path: Path, before: dict[str, bytes]) -> None:
    assert snapshot(tmp_path / "state") == before
    leftovers = [p for p in tmp_path.iterdir() if ".restoring" in p.name]
    assert not leftovers, leftovers


def tamper(kind: str, members: Members, tmp_path: Path) -> Members:
    if kind == "manifest points at cron.d":

        def change(m: dict[str, object]) -> None:
            m["state_dir"] = str(tmp_path / "cron.d")
            m["config_path"] = str(tmp_path / "cron.d" / "evil")

        return edit_manifest(members, change)
    if kind == "dot-dot member":
        info = tarfile.TarInfo("state/../../evil")
        return [*members, (info, b"* * * * * root touch /pwned\n")]
    if kind == "absolute member":
        info = tarfile.TarInfo(str(tmp_path / "evil"))
        return [*members, (info, b"x")]
    if kind == "unlisted member":
        info = tarfile.TarInfo("state/certs/www/extra")
        return [*members, (info, b"x")]
    if kind == "entries removed":
        files = [
            i for i, (m, _) in enumerate(members) if m.isfile() and m.name.startswith("state/")
        ]
        doomed = set(files[: len(files) // 2])
        return [x for i, x in enumerate(members) if i not in doomed]
    if kind == "flipped key byte":
        out = []
        for info, data in members:
            if info.name.endswith("privkey.pem") and data is not None:
                data = data[:50] + bytes([data[50] ^ 1]) + data[51:]
            out.append((info, data))
        return out
    if kind == "escaping link":

        def change(m: dict[str, object]) -> None:
            entries = m["entries"]
            assert isinstance(entries, list)
            entries.append(
                {"path": "certs/www/evil", "type": "link", "mode": 511, "target": "../../../../etc"}
            )

        info = tarfile.TarInfo("state/certs/www/evil")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../../etc"
        return [*edit_manifest(members, change), (info, None)]
    if kind == "write through a link":

        def change(m: dict[str, object]) -> None:
            entries = m["entries"]
            assert isinstance(entries, list)
            entries.append(
                {
                    "path": "certs/www/current/planted",
                    "type": "file",
                    "mode": 420,
                    "size": 1,
                    "sha256": hashlib.sha256(b"x").hexdigest(),
                }
            )

        info = tarfile.TarInfo("state/certs/www/current/planted")
        return [*edit_manifest(members, change), (info, b"x")]
    if kind == "device node":
        info = tarfile.TarInfo("state/dev")
        info.type = tarfile.CHRTYPE
        return [*members, (info, None)]
    if kind == "old format":
        return edit_manifest(members, lambda m: m.update(format=1))
    raise AssertionError(kind)


ATTACKS = [
    "manifest points at cron.d", "dot-dot member", "absolute member", "unlisted member",
    "entries removed", "flipped key byte", "escaping link", "write through a link",
    "device node", "old format",
]  # fmt: skip


@pytest.mark.parametrize("kind", ATTACKS)
def test_crafted_archive_is_refused_and_nothing_changes(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path, good = setup_state(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path / "state")
    crafted = write_members(tmp_path / "crafted.tgz", tamper(kind, read_members(good), tmp_path))
    code, text = restore(cfg_path, crafted, "--force", capsys=capsys)
    if kind == "manifest points at cron.d":
        # the manifest's paths are never destinations: it restores where -c says
        assert code == 0, text
        assert not (tmp_path / "cron.d").exists()
        assert snapshot(tmp_path / "state") == before
        return
    assert code == 64, text
    assert "internal error" not in text
    assert_untouched(tmp_path, before)
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive_is_refused(
    tmp_path: Path, cut: float, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path, good = setup_state(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path / "state")
    data = good.read_bytes()
    short = tmp_path / "short.tgz"
    short.write_bytes(data[: int(len(data) * cut)])
    code, text = restore(cfg_path, short, "--force", capsys=capsys)
    assert code == 64, text
    assert "truncated" in text or "not a readable" in text or "incomplete" in text
    assert_untouched(tmp_path, before)


def test_oversized_member_is_refused_before_its_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A header claiming 4 GiB (a gzip bomb's shape) stops at the header."""
    cfg_path, good = setup_state(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path / "state")
    members = read_members(good)
    bomb = tmp_path / "bomb.tgz"
    with tarfile.open(bomb, "w:gz") as tar:
        for info, data in members[:2]:
            tar.addfile(info, io.BytesIO(data or b""))
        big = tarfile.TarInfo("state/big")
        big.size = 4 << 30
        tar.fileobj.write(big.tobuf())  # type: ignore[union-attr]
        tar.fileobj.write(b"\0" * 1024 * 1024)  # type: ignore[union-attr]
    code, text = restore(cfg_path, bomb, "--force", capsys=capsys)
    assert code == 64 and "MiB unpacked" in text, text
    assert_untouched(tmp_path, before)


def test_good_archive_restores_modes_and_needs_force_over_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path, good = setup_state(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path / "state")
    code, text = restore(cfg_path, good, capsys=capsys)
    assert code == 64 and "refusing to overwrite" in text
    shutil.rmtree(tmp_path / "state")
    code, text = restore(cfg_path, good, capsys=capsys)
    assert code == 0, text
    state = tmp_path / "state"
    assert snapshot(state) == before
    for p in [state, *state.rglob("*")]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.lstat().st_mode)
        if p.is_dir():
            assert mode == 0o700, p
        elif p.name in ("privkey.pem", "bundle.pem", "state.json", "history.jsonl"):
            assert mode == 0o600, p
    assert os.readlink(state / "certs" / "www" / "current").startswith("releases/")


def test_config_is_restored_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path, good = setup_state(tmp_path)
    original = cfg_path.read_bytes()
    cfg_path.unlink()
    shutil.rmtree(tmp_path / "state")
    code, text = restore(cfg_path, good, capsys=capsys)
    assert code == 64 and "--with-config" in text  # no config: it cannot tell where
    code, text = restore(cfg_path, good, "--with-config", capsys=capsys)
    assert code == 0, text
    assert cfg_path.read_bytes() == original
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600


def test_force_never_moves_aside_a_directory_that_is_not_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path, good = setup_state(tmp_path)
    text = cfg_path.read_text().replace(str(tmp_path / "state"), str(tmp_path / "precious"))
    cfg_path.write_text(text)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data").write_text("keep me")
    code, out = restore(cfg_path, good, "--force", capsys=capsys)
    assert code == 64 and "does not look like a certagent state" in out
    assert (tmp_path / "precious" / "data").read_text() == "keep me"
