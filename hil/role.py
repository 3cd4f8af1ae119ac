"""The rig's stand-in database for scenarios without PostgreSQL: a role file that the agent's
command adapter reads (``cat FILE``) and its promote/demote commands rewrite.

    python -m hil.role FILE primary|standby
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from firmware.state import write_atomic


def write_role(path: Path, role: str) -> None:
    if role not in ("primary", "standby"):
        raise SystemExit(f"role must be primary or standby, not {role!r}")
    write_atomic(path, json.dumps({"role": role, "in_sync": True, "lag_bytes": 0, "lag_s": 0.0}), durable=False)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    write_role(Path(sys.argv[1]), sys.argv[2])
