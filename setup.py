"""Billmaster Arbiter: firmware, board support, host tools and the HIL rig."""
from setuptools import find_packages, setup

setup(
    name="billmaster-arbiter",
    version="0.1.0",
    description="Arbiter appliance that fences and fails over a billing hot-standby pair",
    python_requires=">=3.11",
    packages=find_packages(include=["firmware*", "board*", "host_tools*", "hil*"]),
    package_data={"firmware": ["mibs/*"], "board": ["systemd/*", "udev/*", "image/*"]},
    install_requires=[
        "pyserial>=3.5",
        "cobs>=1.2",
        "scapy>=2.5",
        "gpiozero>=2.0",
        "PyNUTClient>=2.8",
        "pysnmp>=7.1",
        "cryptography>=42",
        "pyroute2>=0.7",
    ],
    extras_require={
        "pi": ["lgpio", "rpi-lgpio"],
        "postgres": ["psycopg2-binary>=2.9"],
        "test": ["pytest>=8", "pytest-timeout", "hypothesis>=6", "psycopg2-binary>=2.9"],
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
