"""What a command is: its name and help, the arguments it adds to the grammar, and its
entry, which answers (printing) with an exit status, or returns a report that `cli`
prints (text or JSON) and maps to the exit status.

Imports nothing heavy: the grammar is built from these for `--help`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from ..errors import ExitStatus, PluginStatus
    from ..model import Config, Report

# The answer: an exit status (the entry printed its own answer; `check`'s is a
# monitoring plugin's), or a report for `cli` to print and map to one.
Entry = Callable[
    [argparse.Namespace, "Config | None", bool], Union["ExitStatus", "PluginStatus", "Report"]
]


def no_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """A command that takes none beyond the common options."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    # adds the command's arguments to its parser (`common`: the options every parser has)
    define: Callable[[argparse.ArgumentParser, argparse.ArgumentParser], None]
    run: Entry
    # loaded by `cli` before the entry runs; False: the entry needs none, or loads it
    # itself (check -H, health, restore, config schema)
    needs_config: bool = True


def need(config: Config | None) -> Config:
    """The configuration `cli` loaded for a command that declared it needs one."""
    assert config is not None  # noqa: S101 - needs_config commands are given one
    return config
