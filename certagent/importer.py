"""`certagent import certbot [DIR]` and `certagent import lego [DIR]`: a way in for
people who already run certbot or lego, without a new account or a new issuance.

From the source (read only; nothing of it is changed): the ACME account of the
configured CA (its key and URL), and each lineage's current certificate and key, which
become that certificate's first release here (current, not deployed: `certagent
deploy NAME` does that once the config has a deploy section). A lineage that the
configuration does not name yet is stored under its own name and a config snippet
for it is returned. An account or a certificate that certagent already has is kept.

Side effects: reads the source directory; writes the state directory.
"""

from __future__ import annotations

import configparser
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import crypto
from .errors import CertagentError, ExitStatus
from .issuance import stage
from .model import CertSpec, Config, Http01Standalone, Http01Webroot
from .store import Store, atomic_write

DEFAULT_DIRS = {"certbot": Path("/etc/letsencrypt"), "lego": Path("/root/.lego")}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ImportFailed(CertagentError):
    exit_status = ExitStatus.FAILED
    code = "import"


@dataclass
class Lineage:
    name: str
    key_pem: bytes
    fullchain: bytes
    webroot: str | None = None
    standalone_port: int | None = None


@dataclass
class Imported:
    source: str
    account: str | None = None  # the account URL taken over, if any
    notes: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    snippet: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "schema": 1,
            "command": f"import {self.source}",
            "account": self.account,
            "certificates": self.certificates,
            "notes": self.notes,
            "config_snippet": self.snippet,
        }


def run(config: Config, source: str, folder: Path | None = None) -> Imported:
    from . import api  # the composition root

    folder = folder or DEFAULT_DIRS[source]
    marks = ("renewal", "accounts") if source == "certbot" else ("certificates", "accounts")
    if not folder.is_dir() or not any((folder / m).is_dir() for m in marks):
        raise ImportFailed(
            f"{folder} is not a {source} directory (no {' or '.join(m + '/' for m in marks)})"
        )
    read = _certbot if source == "certbot" else _lego
    account, lineages = read(folder, config.ca.directory)
    result = Imported(source)
    store = Store(config.state_dir, config.state_group)
    with store.lock():
        result.account = _take_account(store, config, account, result.notes)
        ctx = api.context_for_import(config, store)
        snippets = []
        for lineage in lineages:
            spec = _spec_for(config, lineage, result.notes)
            if spec is None:
                continue
            if store.current(spec.name) is not None:
                result.notes.append(f"{spec.name}: kept the certificate certagent already has")
                continue
            key = crypto.load_key(lineage.key_pem)
            release = stage(ctx, spec, key, lineage.fullchain, config.ca.directory)
            store.activate(spec.name, release.release_id)
            result.certificates.append(spec.name)
            result.notes.append(
                f"{spec.name}: release {release.release_id} from {source}'s {lineage.name}, "
                f"valid until {release.not_after:%Y-%m-%d %H:%M} UTC"
            )
            if config.certificate(spec.name) is None:
                snippets.append(_snippet(spec, lineage))
    if snippets:
        result.snippet = "certificates:\n" + "".join(snippets)
    return result


def _take_account(
    store: Store, config: Config, account: tuple[bytes, str] | None, notes: list[str]
) -> str | None:
    if account is None:
        notes.append(f"no account for {config.ca.directory} in the source")
        return None
    key_pem, url = account
    folder = store.account_dir(config.ca.directory)
    if (folder / "key.pem").exists():
        notes.append(f"kept the account certagent already has for {config.ca.directory}")
        return None
    atomic_write(folder / "key.pem", key_pem, 0o600)
    record = {"directory": config.ca.directory, "registration": {"body": {}, "uri": url}}
    atomic_write(folder / "account.json", json.dumps(record, indent=2).encode(), 0o600)
    notes.append(f"took over the account {url}")
    return url


def _spec_for(config: Config, lineage: Lineage, notes: list[str]) -> CertSpec | None:
    """The configured certificate with the same names, else one named after the lineage."""
    try:
        facts = crypto.facts(crypto.split_pem_chain(lineage.fullchain)[0])
        key_type = crypto.key_type_of(crypto.load_key(lineage.key_pem))
    except (ValueError, IndexError) as exc:
        notes.append(f"{lineage.name}: skipped, unreadable ({exc})")
        return None
    if key_type is None:
        notes.append(f"{lineage.name}: skipped, a key type certagent does not use")
        return None
    for spec in config.certificates:
        if set(spec.names) == set(facts.names):
            return spec
    name = lineage.name.replace("*", "_")
    if not _NAME.fullmatch(name):
        notes.append(f"{lineage.name}: skipped, not usable as a certificate name")
        return None
    challenge = (
        Http01Webroot(Path(lineage.webroot))
        if lineage.webroot
        else Http01Standalone("0.0.0.0", lineage.standalone_port or 80)  # noqa: S104
    )
    return CertSpec(name, tuple(facts.names), key_type, challenge)


def _snippet(spec: CertSpec, lineage: Lineage) -> str:
    if isinstance(spec.challenge, Http01Webroot):
        challenge = f"{{type: http-01, webroot: {spec.challenge.webroot}}}"
    else:
        port = spec.challenge.port if isinstance(spec.challenge, Http01Standalone) else 80
        challenge = f"{{type: http-01, standalone: {{port: {port}}}}}"
    return (
        f"  {spec.name}:\n"
        f"    names: [{', '.join(spec.names)}]\n"
        f"    key_type: {spec.key_type.value}\n"
        f"    challenge: {challenge}\n"
    )


# -- certbot: /etc/letsencrypt ------------------------------------------------------------


def _certbot(folder: Path, directory: str) -> tuple[tuple[bytes, str] | None, list[Lineage]]:
    lineages = []
    wanted_account = None
    for conf in sorted((folder / "renewal").glob("*.conf")):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string("[top]\n" + conf.read_text(encoding="utf-8"))
        except (OSError, configparser.Error, UnicodeDecodeError):
            continue
        params = parser["renewalparams"] if parser.has_section("renewalparams") else {}
        if params.get("server") and params.get("server") != directory:
            continue  # a lineage of another CA
        wanted_account = wanted_account or params.get("account")
        live = folder / "live" / conf.stem
        try:
            key, chain = (live / "privkey.pem").read_bytes(), (live / "fullchain.pem").read_bytes()
        except OSError:
            continue
        webroot = None
        if parser.has_section("[webroot_map]"):  # certbot writes `[[webroot_map]]`
            webroot = next(iter(parser["[webroot_map]"].values()), None)
        elif params.get("webroot_path"):
            webroot = params["webroot_path"].split(",")[0].strip() or None
        port = params.get("http01_port")
        lineages.append(
            Lineage(conf.stem, key, chain, webroot, int(port) if port and port.isdigit() else None)
        )
    split = urlsplit(directory)
    base = folder / "accounts" / f"{split.netloc}{split.path}"
    accounts = sorted(base.glob("*/regr.json")) if base.is_dir() else []
    chosen = next((a for a in accounts if a.parent.name == wanted_account), None) or (
        accounts[0] if accounts else None
    )
    account = None
    if chosen is not None:
        try:
            url = json.loads(chosen.read_text(encoding="utf-8"))["uri"]
            key_pem = crypto.jwk_to_pem((chosen.parent / "private_key.json").read_text())
            account = (key_pem, str(url))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImportFailed(f"unreadable certbot account {chosen.parent}: {exc}") from exc
    return account, lineages


# -- lego: ~/.lego ------------------------------------------------------------------------


def _lego(folder: Path, directory: str) -> tuple[tuple[bytes, str] | None, list[Lineage]]:
    netloc = urlsplit(directory).netloc.replace(":", "_")
    account = None
    for record in sorted((folder / "accounts" / netloc).glob("*/account.json")):
        try:
            raw = json.loads(record.read_text(encoding="utf-8"))
            email = raw.get("email") or record.parent.name
            key_pem = (record.parent / "keys" / f"{email}.key").read_bytes()
            crypto.load_key(key_pem)
            account = (key_pem, str(raw["registration"]["uri"]))
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    lineages = []
    for crt in sorted((folder / "certificates").glob("*.crt")):
        if crt.name.endswith(".issuer.crt"):
            continue
        key = crt.with_suffix(".key")
        try:
            lineages.append(Lineage(crt.stem, key.read_bytes(), crt.read_bytes()))
        except OSError:
            continue
    return account, lineages
