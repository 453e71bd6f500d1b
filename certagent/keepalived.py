"""keepalived's own view of its VRRP instances, from a dump it writes when signalled.

VRRP backups send no adverts, so the network alone cannot prove a backup alive:
only keepalived answering a signal with a fresh dump does. `dump` sends the JSON
and DATA signals (numbers from `keepalived --signum`) to the pid in the pid file,
waits until both files are complete (keepalived renames them into place *before*
writing them), and returns them. It is one fixed POSIX sh script run through a
runner: `sh -c SCRIPT` here, or the same argv after a prefix (ssh, salt) on the
peer, so the peer needs nothing but sh, coreutils and keepalived.

Side effects: through the runner only (signals to keepalived, reads its dump
files). Parsing and judging (`parse`, `readiness`) are pure.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Protocol

from .errors import CertagentError
from .system import RunResult

# Exit codes of the script, so the caller can say what went wrong without parsing prose.
NOT_RUNNING, NO_SIGNUM, NO_ANSWER, UNTRUSTED = 3, 4, 5, 6

DUMP_SCRIPT = r"""
pidfile=$1 dir=$2 tries=$3
pid=$(cat "$pidfile" 2>/dev/null) || { echo "no pid file $pidfile"; exit 3; }
case $pid in ''|*[!0-9]*) echo "$pidfile holds no pid"; exit 3;; esac
kill -0 "$pid" 2>/dev/null || { echo "no process $pid (from $pidfile)"; exit 3; }
owner=$(stat -c %u "/proc/$pid") || { echo "no process $pid"; exit 3; }
if [ "$dir" = auto ]; then  # where keepalived writes: its own TMPDIR, else /tmp
    dir=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^TMPDIR=//p' | head -n 1)
    [ -n "$dir" ] || dir=/tmp
fi
# Through keepalived's own root: its /tmp even when we run with PrivateTmp (or it does).
[ -d "/proc/$pid/root$dir" ] && dir="/proc/$pid/root$dir"
# Trust only files keepalived itself wrote: in a directory nobody else can write
# (or a sticky one, where nobody can replace them), regular, owned by its user.
duid=$(stat -L -c %u "$dir" 2>/dev/null) || {
    kill -0 "$pid" 2>/dev/null || { echo "process $pid exited"; exit 3; }
    echo "no dump directory $dir"; exit 6; }
[ "$duid" = 0 ] || [ "$duid" = "$owner" ] || { echo "$dir is owned by uid $duid"; exit 6; }
[ -z "$(find "$dir" -maxdepth 0 \( -perm -0002 -o -perm -0020 \) ! -perm -1000)" ] || {
    echo "$dir can be written by others and is not sticky"; exit 6; }
mine() { [ -f "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %u "$1")" = "$owner" ]; }
json=$(keepalived --signum=JSON) && data=$(keepalived --signum=DATA) || {
    echo "keepalived --signum failed (keepalived built without JSON support?)"; exit 4; }
rm -f "$dir/keepalived.json" "$dir/keepalived.data"
kill "-$json" "$pid" && kill "-$data" "$pid" || { echo "cannot signal pid $pid"; exit 3; }
i=0 last=
while :; do
    if mine "$dir/keepalived.json" && mine "$dir/keepalived.data" \
        && [ -s "$dir/keepalived.json" ] && [ -s "$dir/keepalived.data" ]; then
        now=$(wc -c < "$dir/keepalived.json")/$(wc -c < "$dir/keepalived.data")
        [ "$now" = "$last" ] && break
        last=$now
    fi
    i=$((i + 1))
    if [ "$i" -ge "$tries" ]; then
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited"; exit 3; }
        for f in "$dir/keepalived.json" "$dir/keepalived.data"; do
            if [ -e "$f" ] || [ -L "$f" ]; then mine "$f" || {
                echo "$f was not written by keepalived (not a file owned by uid $owner)"
                exit 6; }
            fi
        done
        echo "pid $pid wrote no dump into $dir"; exit 5
    fi
    sleep 0.02
done
echo "@@now $(date +%s.%N)"
echo "@@json"; cat "$dir/keepalived.json"; echo
echo "@@data"; cat "$dir/keepalived.data"
"""
POLL = 0.02  # seconds between checks in the script
OUTPUT_LIMIT = 4 * 2**20  # a dump with many instances and interfaces is still far below


class VrrpState(IntEnum):
    INIT = 0
    BACKUP = 1
    MASTER = 2
    FAULT = 3


class Run(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        timeout: float,
        env: Mapping[str, str],
        stdin: bytes | None = None,
        limit: int = ...,
    ) -> RunResult: ...


class KeepalivedError(CertagentError):
    """keepalived could not be read (not running, frozen, unreachable, bad dump)."""

    code = "keepalived-unreadable"


@dataclass(frozen=True)
class Instance:
    name: str
    state: VrrpState
    vrid: int
    priority: int  # effective priority
    master_priority: int  # the priority in the adverts it hears (a BACKUP's view)
    vips: frozenset[str]  # "address/prefix"
    advert_int: float
    src_ip: str | None = None  # the address it sends adverts from
    master_router: str | None = None  # who it hears as master
    advert_age: float | None = None  # seconds since the last accepted advert (a BACKUP's)
    scripts: Mapping[str, str] = field(default_factory=dict)  # tracked script -> GOOD/BAD…

    def describe(self) -> str:
        vips = ", ".join(sorted(self.vips))
        text = f"{self.name} {self.state.name} vrid {self.vrid} priority {self.priority} [{vips}]"
        if self.state is VrrpState.BACKUP and self.advert_age is not None:
            text += f", last advert {self.advert_age:.2f} s ago from {self.master_router}"
        return text


@dataclass(frozen=True)
class Where:
    """How to reach one node's keepalived: a command prefix (empty: this host)."""

    label: str  # "this node" or "peer 10.0.0.12"
    prefix: tuple[str, ...]
    pid_file: str
    dump_dir: str
    quote: bool = False  # the prefix hands the command to a shell (ssh): quote it

    def argv(self, command: Sequence[str]) -> list[str]:
        if not self.prefix:
            return list(command)
        if self.quote:
            return [*self.prefix, shlex.join(command)]
        return [*self.prefix, *command]


def dump(where: Where, run: Run, timeout: float) -> dict[str, Instance]:
    """A fresh dump from keepalived at `where`, parsed: instance name -> Instance."""
    tries = max(1, int(timeout / POLL))
    command = ["sh", "-c", DUMP_SCRIPT, "certagent-keepalived", where.pid_file, where.dump_dir]
    # The script needs its time plus the prefix's (an ssh connection); the runner kills it
    # past that, so a peer that hangs (partitioned, frozen) costs a bounded wait.
    result = run(where.argv([*command, str(tries)]), timeout * 2 + 5, {}, limit=OUTPUT_LIMIT)
    text = result.output.strip()
    if result.timed_out:
        raise KeepalivedError(f"{where.label}: no answer within {result.seconds:.0f} s")
    if result.returncode == NOT_RUNNING:
        raise KeepalivedError(f"{where.label}: keepalived is not running ({_last(text)})")
    if result.returncode == NO_ANSWER:
        raise KeepalivedError(
            f"{where.label}: keepalived did not answer within {timeout:g} s "
            f"(frozen or hung?): {_last(text)}"
        )
    if result.returncode == UNTRUSTED:
        raise KeepalivedError(f"{where.label}: refusing the keepalived dump: {_last(text)}")
    if not result.ok:
        raise KeepalivedError(f"{where.label}: cannot read keepalived: {result.describe()}")
    try:
        return parse(text)
    except ValueError as exc:
        raise KeepalivedError(f"{where.label}: unreadable keepalived dump: {exc}") from exc


def _last(text: str) -> str:
    return text.splitlines()[-1] if text else "no output"


def parse(text: str) -> dict[str, Instance]:
    """Parse the script's output: `@@now`, then the JSON dump, then the data dump."""
    m = re.search(r"^@@now (\S+)\n@@json\n(.*?)\n@@data\n(.*)\Z", text, re.S | re.M)
    if not m:
        raise ValueError("missing sections")
    now = float(m.group(1))
    try:
        items = json.loads(m.group(2))
    except json.JSONDecodeError as exc:
        raise ValueError(f"keepalived.json: {exc}") from exc
    topology, scripts = _data(m.group(3))
    out: dict[str, Instance] = {}
    for item in items if isinstance(items, list) else []:
        d = item.get("data", {}) if isinstance(item, dict) else {}
        try:
            name = str(d["iname"])
            inst = Instance(
                name=name,
                state=VrrpState(int(d["state"])),
                vrid=int(d["vrid"]),
                priority=int(d.get("effective_priority", d.get("base_priority", 0))),
                master_priority=int(d.get("master_priority", 0)),
                vips=frozenset(str(v).split()[0] for v in d.get("vips", [])),
                advert_int=float(d.get("adver_int", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"keepalived.json: instance entry lacks {exc}") from exc
        facts = topology.get(name, {})
        read_timeout = _number(facts.get("Read timeout"))  # "DISABLED" in FAULT
        down_timer = _number(facts.get("Master down timer"))  # microseconds
        age = None
        if read_timeout is not None and down_timer is not None:
            age = max(0.0, now - (read_timeout - down_timer / 1e6))
        tracked = facts.get("tracked", "").split()
        out[name] = replace(
            inst,
            src_ip=facts.get("Using src_ip"),
            master_router=facts.get("Master router"),
            advert_age=age,
            scripts={s: scripts.get(s, "unknown") for s in tracked},
        )
    if not out:
        raise ValueError("keepalived.json lists no VRRP instance")
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


def _data(text: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """From keepalived.data: per instance the facts the JSON lacks; per script its status."""
    topology: dict[str, dict[str, str]] = {}
    scripts: dict[str, str] = {}
    section = ""
    current: dict[str, str] | None = None
    script: str | None = None
    in_tracked = False
    for line in text.splitlines():
        if line.startswith("------<"):
            section, current, script, in_tracked = line.strip("-<> "), None, None, False
            continue
        key, sep, value = line.strip().partition(" = ")
        if section == "VRRP Topology":
            if line.startswith(" VRRP Instance = "):
                current = topology.setdefault(line.split(" = ", 1)[1].strip(), {})
                in_tracked = False
            elif current is not None:
                if line.startswith("   ") and not line.startswith("    "):  # a fact or a header
                    in_tracked = line.strip() == "Tracked scripts :"
                    if sep:
                        current.setdefault(key, value.strip())
                elif in_tracked and " weight " in line:  # "     NAME weight N" under it
                    name = line.split()[0]
                    current["tracked"] = f"{current.get('tracked', '')} {name}".strip()
        elif section == "VRRP Scripts":
            if line.startswith(" VRRP Script = "):
                script = line.split(" = ", 1)[1].strip()
            elif script is not None and key == "Status" and sep:
                scripts.setdefault(script, value.strip())
    return topology, scripts


# -- judging ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What the configuration says the pair looks like."""

    instance: str
    vips: frozenset[str] = frozenset()  # bare addresses; empty: not checked against config
    max_advert_age: float | None = None  # None: three advert intervals, at least 1 s


def local_problems(
    local: Mapping[str, Instance], expect: Expect
) -> tuple[Instance | None, list[str]]:
    """This node's instance, and why it is not a MASTER we can roll out from."""
    inst = local.get(expect.instance)
    if inst is None:
        return None, [f"this node's keepalived has no VRRP instance {expect.instance} "
                      f"(it has {', '.join(sorted(local)) or 'none'})"]  # fmt: skip
    problems = []
    if inst.state is not VrrpState.MASTER:
        problems.append(f"this node's {inst.name} is {inst.state.name}, not MASTER")
    bare = frozenset(v.split("/")[0] for v in inst.vips)
    if expect.vips and bare != expect.vips:
        problems.append(
            f"this node's {inst.name} has VIPs {_set(bare)}, the config says {_set(expect.vips)}"
        )
    return inst, problems


def peer_problems(
    peer: Mapping[str, Instance], local: Instance, expect: Expect, label: str
) -> list[str]:
    """Why the peer could not take the VIP from `local` right now: every reason."""
    inst = peer.get(expect.instance)
    if inst is None:
        return [f"{label}: keepalived has no VRRP instance {expect.instance} "
                f"(it has {', '.join(sorted(peer)) or 'none'})"]  # fmt: skip
    problems = []
    if inst.state is not VrrpState.BACKUP:
        problems.append(f"{label}: {inst.name} is {inst.state.name}, not BACKUP")
    if inst.vrid != local.vrid:
        problems.append(f"{label}: {inst.name} has VRID {inst.vrid}, this node {local.vrid}")
    if inst.vips != local.vips:
        problems.append(
            f"{label}: {inst.name} has VIPs {_set(inst.vips)}, this node {_set(local.vips)}"
        )
    if inst.priority >= local.priority:
        problems.append(
            f"{label}: {inst.name} priority {inst.priority} is not lower than this node's "
            f"{local.priority}"
        )
    if inst.state is VrrpState.BACKUP:
        limit = expect.max_advert_age or max(1.0, 3 * local.advert_int)
        if inst.advert_age is None:
            problems.append(f"{label}: {inst.name} reports no advert timing")
        elif inst.advert_age > limit:
            problems.append(
                f"{label}: {inst.name} last heard an advert {inst.advert_age:.1f} s ago "
                f"(limit {limit:g} s): it does not hear this node"
            )
        if local.src_ip and inst.master_router and inst.master_router != local.src_ip:
            problems.append(
                f"{label}: {inst.name} hears {inst.master_router} as master, not this node "
                f"({local.src_ip})"
            )
        if inst.master_priority != local.priority:
            problems.append(
                f"{label}: {inst.name} hears master priority {inst.master_priority}, "
                f"this node has {local.priority}"
            )
    bad = sorted(s for s, status in inst.scripts.items() if status != "GOOD")
    if bad:
        problems.append(f"{label}: track script(s) {', '.join(bad)} not GOOD")
    return problems


def _set(items: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(items)) + "}" if items else "{}"
