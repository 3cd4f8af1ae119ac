"""Billmaster Arbiter appliance firmware: protocol, detection, decisions, actions.

``__version__`` is the one place the version is written: setup.py reads it from here, and
every command's ``--version`` prints it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__version__ = "0.1.0"


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version`` on a command: prints ``PROG VERSION`` and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
