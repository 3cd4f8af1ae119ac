"""Billmaster Arbiter: firmware, board support, host tools and the HIL rig."""
import re
from pathlib import Path

from setuptools import find_packages, setup

# the one place the version is written (every command's --version prints it)
VERSION = re.search(r'^__version__ = "(.+)"$', (Path(__file__).parent / "firmware" / "__init__.py").read_text(),
                    re.M).group(1)

setup(
    name="billmaster-arbiter",
    version=VERSION,
    description="Arbiter appliance that fences and fails over a billing hot-standby pair",
    python_requires=">=3.11",
    packages=find_packages(include=["firmware*", "board*", "host_tools*", "hil*"]),
    package_data={"firmware": ["mibs/*", "static/*"], "board": ["systemd/*", "udev/*", "image/*"], "host_tools": ["systemd/*"]},
    # The core both sides need; the rest is split so that a database server's agent pulls
    # neither pysnmp nor gpiozero. Majors are capped where a new major broke APIs before.
    install_requires=[
        "pyserial>=3.5",
        "cobs>=1.2",
    ],
    extras_require={
        "appliance": [
            "gpiozero>=2.0,<3",
            "PyNUTClient>=2.8",
            "pysnmp>=7.1,<8",
            "cryptography>=42",  # SNMPv3 privacy
            "prometheus_client>=0.20,<1",  # /metrics
        ],
        "pi": ["billmaster-arbiter[appliance]", "lgpio", "rpi-lgpio"],  # the appliance on a Raspberry Pi
        "agent": [
            "pyroute2>=0.7,<0.10",  # the virtual IP
        ],
        "postgres": ["psycopg2>=2.9,<3"],  # built against Debian's libpq (libpq-dev), not the -binary wheel
        "rig": ["billmaster-arbiter[appliance,agent,postgres]", "matplotlib>=3.9,<4",
                "scapy>=2.5,<3"],  # the bench's plot; the client probe's ARP watch
        "test": ["billmaster-arbiter[rig]", "pytest>=8", "pytest-timeout", "hypothesis>=6",
                 "selenium>=4.20,<5"],  # the status page in Debian's chromium (chromium-driver),
    },
    entry_points={
        "console_scripts": [
            "arbiterd = firmware.daemon:main",
            "arbiterctl = firmware.cli:main",
            "arbiter-agent = host_tools.agent:main",
            "arbiter-hil = hil.cli:main",
            "arbiter-image = host_tools.image:main",
            "arbiter-flash = host_tools.flash:main",
            "arbiter-provision = host_tools.provision:main",
        ]
    },
)
