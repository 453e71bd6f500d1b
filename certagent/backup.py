"""`certagent backup FILE` and `certagent restore FILE [--force]`.

The archive (tar.gz, 0600: it holds private keys) contains the whole state directory
(accounts, releases, `current` links, state files, history, staging state) and the
configuration file, plus a manifest with where they came from. It is written under
the run lock, to a temporary file that is renamed into place.

Restore never deletes anything: it unpacks next to the target, then, only with
--force, moves an existing state directory (and a differing configuration file)
aside to `<name>.before-restore-<time>` before renaming the restored one into place.

Side effects: filesystem.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import CertagentError, ExitStatus, StoreError
from .model import Config
from .store import Store, fsync_dir, make_private_dir

FORMAT = 1
MANIFEST = "manifest.json"


class RestoreRefused(CertagentError):
    exit_status = ExitStatus.USAGE


@dataclass(frozen=True)
class Manifest:
    created: str
    state_dir: Path
    config_path: Path
    files: int

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "created": self.created,
            "state_dir": str(self.state_dir),
            "config_path": str(self.config_path),
            "files": self.files,
        }


def backup(config: Config, dest: Path, now: dt.datetime) -> Manifest:
    try:
        return _backup(config, dest, now)
    except OSError as exc:
        raise StoreError(f"cannot write the backup {dest}: {exc.strerror or exc}") from exc


def _backup(config: Config, dest: Path, now: dt.datetime) -> Manifest:
    store = Store(config.state_dir)
    dest = dest.resolve()
    if dest.is_relative_to(config.state_dir):
        raise RestoreRefused(f"{dest}: write the backup outside the state directory")
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    with store.lock():
        files = [
            p
            for p in sorted(config.state_dir.rglob("*"))
            if p.name != "lock" and not p.name.startswith(".tmp-")
        ]
        manifest = Manifest(
            now.isoformat(timespec="seconds"),
            config.state_dir,
            config.source.resolve(),
            sum(1 for p in files if p.is_file() and not p.is_symlink()),
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest.to_json(), indent=2).encode())
                tar.add(config.source, arcname="config/certagent.yaml", recursive=False)
                for path in files:
                    rel = path.relative_to(config.state_dir)
                    tar.add(path, arcname=f"state/{rel}", recursive=False)
                raw.flush()
                os.fsync(raw.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return manifest


def read_manifest(src: Path) -> Manifest:
    try:
        with tarfile.open(src, mode="r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise RestoreRefused(f"{src}: not a certagent backup (no {MANIFEST})")
            raw = json.loads(member.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise RestoreRefused(f"{src}: not a readable certagent backup ({exc})") from exc
    if raw.get("format") != FORMAT:
        raise RestoreRefused(f"{src}: backup format {raw.get('format')} is not {FORMAT}")
    return Manifest(
        raw["created"], Path(raw["state_dir"]), Path(raw["config_path"]), int(raw["files"])
    )


def restore(src: Path, force: bool, now: dt.datetime) -> tuple[Manifest, list[str]]:
    """Put state and configuration back where the manifest says; returns notes."""
    try:
        return _restore(src, force, now)
    except OSError as exc:
        where = exc.filename or src
        raise StoreError(f"restore from {src} failed at {where}: {exc.strerror or exc}") from exc


def _restore(src: Path, force: bool, now: dt.datetime) -> tuple[Manifest, list[str]]:
    manifest = read_manifest(src)
    state_dir, config_path = manifest.state_dir, manifest.config_path
    suffix = f".before-restore-{now:%Y%m%dT%H%M%SZ}"
    occupied = state_dir.exists() and any(state_dir.iterdir())
    with tarfile.open(src, mode="r:gz") as tar:
        members = tar.getmembers()
        _check_members(src, members)
        config_bytes = _read_member(tar, "config/certagent.yaml")
        config_differs = config_path.exists() and config_path.read_bytes() != config_bytes
        if (occupied or config_differs) and not force:
            what = [
                str(p) for p, busy in ((state_dir, occupied), (config_path, config_differs)) if busy
            ]
            raise RestoreRefused(
                f"refusing to overwrite {' and '.join(what)}; with --force they are moved "
                f"aside to *{suffix} (nothing is deleted)"
            )
        make_private_dir(state_dir.parent)
        staging = state_dir.with_name(f".{state_dir.name}.restoring{os.getpid()}")
        make_private_dir(staging)
        for member in members:
            if member.name.startswith("state/"):
                member.name = member.name.removeprefix("state/")
                tar.extract(member, staging, filter="data")
    notes = []
    if state_dir.exists():
        if occupied:
            os.rename(state_dir, state_dir.with_name(state_dir.name + suffix))
            notes.append(f"moved the existing {state_dir} to {state_dir.name}{suffix}")
        else:
            state_dir.rmdir()  # an empty directory: nothing to keep
    os.rename(staging, state_dir)
    state_dir.chmod(0o700)
    fsync_dir(state_dir.parent)
    notes.append(f"restored {manifest.files} file(s) to {state_dir} (backup of {manifest.created})")
    if not config_path.exists() or config_differs:
        if config_differs:
            os.rename(config_path, config_path.with_name(config_path.name + suffix))
            notes.append(f"moved the existing {config_path} to {config_path.name}{suffix}")
        config_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(config_bytes)
        notes.append(f"restored the configuration to {config_path}")
    return manifest, notes


def _check_members(src: Path, members: list[tarfile.TarInfo]) -> None:
    for m in members:
        path = PurePosixPath(m.name)
        if path.is_absolute() or ".." in path.parts:
            raise RestoreRefused(f"{src}: unsafe path in the archive: {m.name}")
        if not (m.isfile() or m.isdir() or m.issym()):
            raise RestoreRefused(f"{src}: unexpected member type in the archive: {m.name}")
        if m.issym() and (PurePosixPath(m.linkname).is_absolute() or m.name.count("/") < 2):
            raise RestoreRefused(f"{src}: unexpected link in the archive: {m.name}")


def _read_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise RestoreRefused(f"{name} is missing from the backup")
    return member.read()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))
