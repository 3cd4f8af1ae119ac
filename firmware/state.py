"""The appliance's persisted state file: written atomically so a power cut or a crash at any
instant leaves either the old version or the new one, never a torn file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from firmware.errors import DamagedFile, StateError

# What parsing a damaged file raises (JSONDecodeError and UnicodeDecodeError are ValueErrors;
# nesting past the recursion limit is a RecursionError).
DAMAGE = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)


def kernel_boot_id() -> str:
    """Differs after every reboot: monotonic timestamps saved under another boot mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        """None if there is no state yet; a corrupt file is an error, never a fresh start."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read ({exc.strerror})") from exc
        try:
            data = json.loads(raw.decode())
        except DAMAGE as exc:
            raise DamagedFile(self.path, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(data, dict):
            raise DamagedFile(self.path, "not a JSON object")
        return data

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(self.path, json.dumps(data, separators=(",", ":")))
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write ({exc.strerror})") from exc


def write_atomic(path: Path | str, text: str, durable: bool = True) -> None:
    """The one way a file is replaced: a hidden temp file beside it, fsync, rename over it,
    fsync the directory (without that last one a power cut can bring back the old file, or
    none). A power cut at any instant leaves the old content or the new, never half.
    ``durable=False`` skips both fsyncs, for the rig's files that need atomicity only."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
