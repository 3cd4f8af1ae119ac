"""The agent installs on a database server without the appliance's libraries: it must run
with pysnmp, gpiozero and PyNUTClient absent, as setup.py's [agent] extra promises."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPLIANCE_ONLY = ("pysnmp", "gpiozero", "PyNUT", "lgpio", "RPi")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {APPLIANCE_ONLY!r}:
            raise ImportError(f"{{name}} is an appliance library, not in the agent's extra")
sys.meta_path.insert(0, Block())
sys.argv = ["arbiter-agent", *sys.argv[1:]]
import host_tools.agent, host_tools.vip, host_tools.replication.postgres, host_tools.replication.command
sys.exit(host_tools.agent.main())
"""


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_agent_runs_without_the_appliance_libraries() -> None:
    done = run_agent("--help")
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout


def test_the_blocker_bites() -> None:
    """The check above is worth something only if importing an appliance module fails under it."""
    done = subprocess.run([sys.executable, "-c", BLOCKER.replace("import host_tools.agent,", "import board.gpio, host_tools.agent,")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "appliance library" in done.stderr


def test_the_agents_requirements_leave_out_the_appliance_libraries() -> None:
    """What pip installs for ``billmaster-arbiter[agent,postgres]``: the core and those two extras."""
    wanted = []
    for req in metadata.requires("billmaster-arbiter") or []:
        name, _, marker = req.partition(";")
        if not marker or any(f'extra == "{e}"' in marker for e in ("agent", "postgres")):
            wanted.append(name.strip())
    assert any(w.startswith("pyroute2") for w in wanted) and any(w.startswith("psycopg2") for w in wanted)
    assert not any(w.lower().startswith(lib.lower()) for w in wanted for lib in ("pysnmp", "gpiozero", "PyNUTClient",
                                                                                  "billmaster-arbiter"))
    assert not any(w.startswith("psycopg2-binary") for w in wanted)
