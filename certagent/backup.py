"""`certagent backup FILE` and `certagent restore FILE [--force] [--with-config]`.

The archive (tar.gz, 0600: it holds private keys) contains the whole state directory
(accounts, releases, `current` links, state files, history, staging state) and the
configuration file, and first of all a manifest that lists every entry with its type,
mode, size and SHA-256. It is written under the run lock, to a temporary file that is
renamed into place.

Restore trusts nothing in the archive. It restores into the *configured* state
directory (never into a path named inside the archive) and writes the configuration
only when asked (`--with-config`), to the path `-c` names. Every member is checked
while it is unpacked into a fresh directory beside the target: its name (relative,
inside `state/`), its type (files, directories, relative links that stay inside), its
size (the whole archive is bounded, so a gzip bomb stops early), its SHA-256 against
the manifest; and the archive must hold exactly what the manifest lists. Only then is
anything live touched: with --force an existing state directory (and a differing
config) is moved aside to `<name>.before-restore-<time>`, never deleted. On any
refusal the unpacked copy is removed and nothing else has changed.

Side effects: filesystem.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import config as config_mod
from .errors import CertagentError, ConfigError, ExitStatus, StoreError
from .index import INDEX_FILE, OLD_FILES
from .model import Config
from .store import Store, fsync_dir, make_private_dir

FORMAT = 2
MANIFEST = "manifest.json"
CONFIG_MEMBER = "config/certagent.yaml"
MAX_TOTAL = 1 << 30  # bytes unpacked, all members together
MAX_MEMBERS = 200_000
MAX_MANIFEST = 64 << 20
STATE_MARKERS = ("certs", "accounts", "history.jsonl", "lock")  # what a state dir holds


class RestoreRefused(CertagentError):
    exit_status = ExitStatus.USAGE
    code = "restore-refused"


@dataclass(frozen=True)
class Entry:
    """One state-directory entry as the manifest lists it (path relative to state/)."""

    path: str
    kind: str  # file, dir, link
    mode: int
    size: int = 0
    sha256: str = ""
    target: str = ""  # a link's target

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "type": self.kind, "mode": self.mode}
        if self.kind == "file":
            out.update(size=self.size, sha256=self.sha256)
        if self.kind == "link":
            out["target"] = self.target
        return out


@dataclass(frozen=True)
class Manifest:
    created: str
    state_dir: Path  # where it was taken from: said, never used as a destination
    config_path: Path
    entries: tuple[Entry, ...]
    config_sha256: str

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.kind == "file")

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "created": self.created,
            "state_dir": str(self.state_dir),
            "config_path": str(self.config_path),
            "files": self.files,
            "config_sha256": self.config_sha256,
            "entries": [e.to_json() for e in self.entries],
        }

    def summary(self) -> dict[str, object]:
        data = self.to_json()
        del data["entries"]
        return data


# -- backup -----------------------------------------------------------------------------


def backup(config: Config, dest: Path, now: dt.datetime) -> Manifest:
    try:
        return _backup(config, dest, now)
    except OSError as exc:
        raise StoreError(f"cannot write the backup {dest}: {exc.strerror or exc}") from exc


def _walk(root: Path) -> Iterator[Path]:
    """Everything under root, parents before children, links never followed."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        base = Path(folder)
        for name in sorted(dirs) + sorted(files):
            yield base / name


def _entry(root: Path, path: Path) -> Entry | None:
    st = path.lstat()
    rel = path.relative_to(root).as_posix()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, "link", 0o777, target=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return Entry(rel, "dir", mode)
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return Entry(rel, "file", mode, st.st_size, digest)
    return None  # sockets, fifos: nothing certagent writes


def _backup(config: Config, dest: Path, now: dt.datetime) -> Manifest:
    store = Store(config.state_dir)
    dest = dest.resolve()
    if dest.is_relative_to(config.state_dir):
        raise RestoreRefused(f"{dest}: write the backup outside the state directory")
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    with store.lock():
        root = config.state_dir
        skip = {"lock", INDEX_FILE, f"{INDEX_FILE}-journal", *OLD_FILES}  # a cache: rebuilt
        entries = [
            e
            for p in _walk(root)
            if p.name not in skip and not p.name.startswith((".tmp-", ".prune-"))
            if (e := _entry(root, p)) is not None
        ]
        config_bytes = config.source.read_bytes()
        manifest = Manifest(
            now.isoformat(timespec="seconds"),
            root,
            config.source.resolve(),
            tuple(entries),
            hashlib.sha256(config_bytes).hexdigest(),
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest.to_json(), indent=1).encode())
                _add_bytes(tar, CONFIG_MEMBER, config_bytes)
                for e in entries:
                    tar.add(root / e.path, arcname=f"state/{e.path}", recursive=False)
                raw.flush()
                os.fsync(raw.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


# -- restore ----------------------------------------------------------------------------


def restore(
    src: Path, config_path: Path, force: bool, with_config: bool, now: dt.datetime
) -> tuple[Manifest, list[str]]:
    """Verify the whole archive into a fresh directory, then put it in place. The state
    goes where the configuration at `config_path` says (or, with `with_config` and no
    configuration there yet, where the archive's own says)."""
    try:
        return _restore(src, config_path, force, with_config, now)
    except OSError as exc:
        where = exc.filename or src
        raise StoreError(f"restore from {src} failed at {where}: {exc.strerror or exc}") from exc


def _restore(
    src: Path, config_path: Path, force: bool, with_config: bool, now: dt.datetime
) -> tuple[Manifest, list[str]]:
    suffix = f".before-restore-{now:%Y%m%dT%H%M%SZ}"
    manifest, config_bytes, staging, state_dir = _unpack_verified(src, config_path, with_config)
    notes: list[str] = []
    try:
        config_differs = (
            with_config and config_path.exists() and config_path.read_bytes() != config_bytes
        )
        occupied = state_dir.exists() and any(state_dir.iterdir())
        if occupied and not _looks_like_state(state_dir):
            raise RestoreRefused(
                f"{state_dir} is not empty and does not look like a certagent state "
                "directory: refusing to move it aside"
            )
        if (occupied or config_differs) and not force:
            busy = [str(p) for p, b in ((state_dir, occupied), (config_path, config_differs)) if b]
            raise RestoreRefused(
                f"refusing to overwrite {' and '.join(busy)}; with --force they are moved "
                f"aside to *{suffix} (nothing is deleted)"
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Verified: from here on the live state changes.
    if state_dir.exists():
        if occupied:
            os.rename(state_dir, state_dir.with_name(state_dir.name + suffix))
            notes.append(f"moved the existing {state_dir} to {state_dir.name}{suffix}")
        else:
            state_dir.rmdir()  # an empty directory: nothing to keep
    os.rename(staging, state_dir)
    os.chmod(state_dir, 0o700)
    fsync_dir(state_dir.parent)
    notes.append(
        f"restored {manifest.files} file(s) to {state_dir} (backup of {manifest.created}, "
        f"every file's SHA-256 verified)"
    )
    if with_config and (config_differs or not config_path.exists()):
        if config_differs:
            os.rename(config_path, config_path.with_name(config_path.name + suffix))
            notes.append(f"moved the existing {config_path} to {config_path.name}{suffix}")
        config_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(config_bytes)
        notes.append(f"restored the configuration to {config_path}")
    elif not with_config:
        notes.append(f"left the configuration {config_path} as it is (--with-config restores it)")
    return manifest, notes


def _looks_like_state(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in STATE_MARKERS)


def _destination(config_bytes: bytes, config_path: Path, with_config: bool) -> Path:
    """The configured state directory: from the configuration at config_path, or, when
    restoring the configuration too and there is none yet, from the archive's."""
    try:
        return config_mod.load(config_path).state_dir
    except ConfigError as exc:
        if not with_config:
            raise RestoreRefused(
                f"cannot tell where to restore: {str(exc).splitlines()[0]}; give the "
                "configuration with -c, or restore it too with --with-config"
            ) from None
    try:
        config = config_mod.parse(config_bytes.decode("utf-8"), config_path)
    except (ConfigError, UnicodeDecodeError) as exc:
        raise RestoreRefused(f"the backup's configuration is not valid: {exc}") from None
    return config.state_dir


def _unpack_verified(
    src: Path, config_path: Path, with_config: bool
) -> tuple[Manifest, bytes, Path, Path]:
    """Unpack into a new directory beside the state dir, checking every member; returns
    the manifest, the archive's config, that directory (removed on any refusal) and the
    state directory it is for."""
    staging: Path | None = None
    try:
        with _open(src) as tar:
            members = _members(src, tar)
            first = next(members, None)
            if first is None or first.name != MANIFEST:
                raise RestoreRefused(f"{src}: not a certagent backup (no {MANIFEST} first)")
            manifest = _manifest(src, _read(tar, first, MAX_MANIFEST))
            second = next(members, None)
            if second is None or second.name != CONFIG_MEMBER or not second.isfile():
                raise RestoreRefused(f"{src}: {CONFIG_MEMBER} is missing")
            config_bytes = _read(tar, second, MAX_MANIFEST)
            if hashlib.sha256(config_bytes).hexdigest() != manifest.config_sha256:
                raise RestoreRefused(f"{src}: {CONFIG_MEMBER} does not match its checksum")
            state_dir = _destination(config_bytes, config_path, with_config)
            make_private_dir(state_dir.parent)
            staging = state_dir.with_name(f".{state_dir.name}.restoring{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            _extract(src, tar, members, manifest, staging)
            _drain(tar)
    except BaseException as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, tarfile.TarError | EOFError | zlib.error | gzip.BadGzipFile):
            raise RestoreRefused(f"{src}: truncated or damaged archive ({exc})") from None
        raise
    return manifest, config_bytes, staging, state_dir


def _drain(tar: tarfile.TarFile) -> None:
    """Read the compressed stream to its end, so gzip checks its CRC and length: an
    archive cut inside its trailer is damaged even if every member came out whole."""
    stream = tar.fileobj
    if stream is not None:
        while stream.read(1 << 20):
            pass


@contextlib.contextmanager
def _open(src: Path) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(src, mode="r:gz")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise RestoreRefused(f"{src}: not a readable certagent backup ({exc})") from exc
    with tar:
        yield tar


def _members(src: Path, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members in archive order, refusing an archive that unpacks beyond the bounds
    before its data is read (a gzip bomb stops at its header)."""
    total = 0
    for count, member in enumerate(tar, 1):
        total += max(0, member.size)
        if count > MAX_MEMBERS or total > MAX_TOTAL:
            raise RestoreRefused(
                f"{src}: more than {MAX_MEMBERS} entries or {MAX_TOTAL >> 20} MiB unpacked: "
                "not a certagent backup"
            )
        yield member


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isfile() or member.size > limit:
        raise RestoreRefused(f"{member.name}: not a file of at most {limit} bytes")
    f = tar.extractfile(member)
    if f is None:
        raise RestoreRefused(f"{member.name}: unreadable")
    data = f.read()
    if len(data) != member.size:
        raise EOFError(f"{member.name} is cut short")
    return data


def _manifest(src: Path, data: bytes) -> Manifest:
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        if raw.get("format") != FORMAT:
            raise RestoreRefused(
                f"{src}: backup format {raw.get('format')!r} is not {FORMAT} (a backup made "
                "before per-file checksums cannot be verified: take a new one)"
            )
        entries = tuple(_manifest_entry(e) for e in raw["entries"])
        return Manifest(
            str(raw["created"]),
            Path(str(raw["state_dir"])),
            Path(str(raw["config_path"])),
            entries,
            str(raw["config_sha256"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RestoreRefused(f"{src}: unreadable {MANIFEST}: {exc}") from None


def _manifest_entry(raw: Any) -> Entry:
    kind = raw["type"]
    if kind not in ("file", "dir", "link"):
        raise ValueError(f"unknown entry type {kind!r}")
    mode = raw["mode"]
    if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"bad mode {mode!r}")
    entry = Entry(
        _safe_path(str(raw["path"])),
        kind,
        mode & 0o777,  # never setuid, setgid or sticky from an archive
        int(raw.get("size", 0)),
        str(raw.get("sha256", "")),
        str(raw.get("target", "")),
    )
    if kind == "link":
        _safe_link(entry.path, entry.target)
    return entry


def _safe_path(name: str) -> str:
    path = PurePosixPath(name)
    if (
        not name
        or path.is_absolute()
        or any(p in ("..", ".", "") for p in name.split("/"))
        or "\0" in name
    ):
        raise RestoreRefused(f"unsafe path in the backup: {name!r}")
    return name


def _safe_link(name: str, target: str) -> None:
    """A link must be relative and stay inside its certificate directory (`current ->
    releases/<id>` is the only kind certagent makes)."""
    parts = PurePosixPath(target).parts
    if not target or PurePosixPath(target).is_absolute() or ".." in parts or "\0" in target:
        raise RestoreRefused(f"unsafe link in the backup: {name} -> {target}")


def _extract(
    src: Path,
    tar: tarfile.TarFile,
    members: Iterator[tarfile.TarInfo],
    manifest: Manifest,
    staging: Path,
) -> None:
    """Write every state member ourselves (no tarfile.extract): exact modes, no links
    followed, each file's bytes checked against the manifest before the next."""
    expected = {e.path: e for e in manifest.entries}
    seen: set[str] = set()
    links: set[str] = set()
    dirs: list[tuple[Path, int]] = []
    for member in members:
        if not member.name.startswith("state/"):
            raise RestoreRefused(f"{src}: unexpected entry {member.name!r} in the backup")
        rel = _safe_path(member.name.removeprefix("state/"))
        entry = expected.get(rel)
        if entry is None or rel in seen:
            raise RestoreRefused(f"{src}: {rel} is not listed in the manifest (tampered?)")
        seen.add(rel)
        path = staging / rel
        parents = {p.as_posix() for p in PurePosixPath(rel).parents}
        if parents & links:
            raise RestoreRefused(f"{src}: {rel} would be written through a link")
        if path.parent != staging and not path.parent.is_dir():
            raise RestoreRefused(f"{src}: {rel} comes before its directory")
        if entry.kind == "dir" and member.isdir():
            path.mkdir(mode=0o700)
            dirs.append((path, entry.mode))
        elif entry.kind == "link" and member.issym() and member.linkname == entry.target:
            os.symlink(entry.target, path)
            links.add(rel)
        elif entry.kind == "file" and member.isfile() and member.size == entry.size:
            data = _read(tar, member, MAX_TOTAL)
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise RestoreRefused(f"{src}: {rel} does not match its checksum (tampered?)")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, entry.mode)
                with os.fdopen(fd, "wb", closefd=False) as f:
                    f.write(data)
                    f.flush()
                    os.fsync(fd)
            finally:
                os.close(fd)
        else:
            raise RestoreRefused(f"{src}: {rel} is not the {entry.kind} the manifest lists")
    missing = sorted(set(expected) - seen)
    if missing:
        raise RestoreRefused(
            f"{src}: incomplete: {len(missing)} of {len(expected)} entries are missing "
            f"(first: {missing[0]})"
        )
    for path, mode in reversed(dirs):  # children first: a 0500 dir must be filled before
        os.chmod(path, mode)
        fsync_dir(path)
    fsync_dir(staging)
