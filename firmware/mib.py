"""BILLMASTER-ARBITER-MIB, rendered from the event table so the MIB and the traps never drift.

The committed ``firmware/mibs/BILLMASTER-ARBITER-MIB`` uses the placeholder enterprise arc
1.3.6.1.4.1.64400. A site renders its own with its registered enterprise number::

    python -m firmware.mib --enterprise 1.3.6.1.4.1.NNN > BILLMASTER-ARBITER-MIB

and sets the same arc in ``alerts.enterprise_oid``. The OID layout below is the one the
SNMP sink sends; both read it from this module.
"""
from __future__ import annotations

import argparse
import re
import sys

from firmware.events import EVENTS, EventType, Severity

DEFAULT_ENTERPRISE = "1.3.6.1.4.1.64400"
MODULE = "BILLMASTER-ARBITER-MIB"
_ENTERPRISES = "1.3.6.1.4.1"
_LAST_UPDATED = "202501010000Z"

# The module sits on the enterprise arc; under it: notifications (0), objects (1), conformance (2).
OBJECTS = ("arbEventSeq", "arbEventSeverity", "arbEventServer", "arbEventChannel", "arbEventText")


def notification_name(event: str) -> str:
    """``link-down`` -> ``arbLinkDown``: the MIB name snmptrapd prints for the event."""
    return "arb" + "".join(part.capitalize() for part in event.split("-"))


def notification_oid(enterprise_oid: str, event: EventType) -> str:
    return f"{enterprise_oid}.0.{event.number}"


def object_oid(enterprise_oid: str, name: str) -> str:
    """The varbind OID of a scalar (instance .0) listed in ``OBJECTS``."""
    return f"{enterprise_oid}.1.{OBJECTS.index(name) + 1}.0"


def _enterprise_number(enterprise_oid: str) -> int:
    match = re.fullmatch(re.escape(_ENTERPRISES) + r"\.(\d+)", enterprise_oid)
    if not match:
        raise ValueError(f"enterprise = {enterprise_oid!r}: must be {_ENTERPRISES}.N")
    return int(match.group(1))


_HEADER = """\
{module} DEFINITIONS ::= BEGIN

-- The base modules imported below ship unchanged in the same folder as this one:
-- SNMPv2-SMI (RFC 2578), SNMPv2-TC (RFC 2579) and SNMPv2-CONF (RFC 2580).

IMPORTS
    MODULE-IDENTITY, OBJECT-TYPE, NOTIFICATION-TYPE, Unsigned32, enterprises
        FROM SNMPv2-SMI
    DisplayString
        FROM SNMPv2-TC
    MODULE-COMPLIANCE, OBJECT-GROUP, NOTIFICATION-GROUP
        FROM SNMPv2-CONF;

billmasterArbiterMIB MODULE-IDENTITY
    LAST-UPDATED "{updated}"
    ORGANIZATION "Billmaster"
    CONTACT-INFO
        "Billmaster Arbiter maintainers.
         The site operating the appliance replaces this module's
         enterprise number with its own registered one."
    DESCRIPTION
        "Alerts of the Billmaster Arbiter appliance, which fences and
         fails over a billing system's hot-standby server pair.
         Every notification carries the same five objects: the
         alert's sequence number, severity, server, channel and text.

         This module is generated from the appliance's event table.
         It is registered on the enterprise arc {enterprise};
         1.3.6.1.4.1.64400 is a placeholder. A site renders its own
         copy under its registered enterprise number with
             python -m firmware.mib --enterprise 1.3.6.1.4.1.NNN
         and sets the same arc in alerts.enterprise_oid."
    REVISION "{updated}"
    DESCRIPTION
        "First version."
    ::= {{ enterprises {number} }}

arbNotifications OBJECT IDENTIFIER ::= {{ billmasterArbiterMIB 0 }}
arbObjects       OBJECT IDENTIFIER ::= {{ billmasterArbiterMIB 1 }}
arbConformance   OBJECT IDENTIFIER ::= {{ billmasterArbiterMIB 2 }}
arbGroups        OBJECT IDENTIFIER ::= {{ arbConformance 1 }}
arbCompliances   OBJECT IDENTIFIER ::= {{ arbConformance 2 }}
"""

_OBJECTS = """
arbEventSeq OBJECT-TYPE
    SYNTAX      Unsigned32
    MAX-ACCESS  accessible-for-notify
    STATUS      current
    DESCRIPTION
        "Sequence number of the alert. It grows with every alert and
         across restarts of the appliance, so a manager can spot gaps
         and duplicates."
    ::= {{ arbObjects 1 }}

arbEventSeverity OBJECT-TYPE
    SYNTAX      INTEGER {{
{severities}
                }}
    MAX-ACCESS  accessible-for-notify
    STATUS      current
    DESCRIPTION
        "Severity of the alert. clear means the alert ends an earlier
         one of the same server and channel."
    ::= {{ arbObjects 2 }}

arbEventServer OBJECT-TYPE
    SYNTAX      DisplayString (SIZE (0..64))
    MAX-ACCESS  accessible-for-notify
    STATUS      current
    DESCRIPTION
        "Name of the server the alert is about; empty for the
         appliance itself."
    ::= {{ arbObjects 3 }}

arbEventChannel OBJECT-TYPE
    SYNTAX      DisplayString (SIZE (0..64))
    MAX-ACCESS  accessible-for-notify
    STATUS      current
    DESCRIPTION
        "Channel the alert is about (serial, lan, ups); empty when it
         concerns no single channel."
    ::= {{ arbObjects 4 }}

arbEventText OBJECT-TYPE
    SYNTAX      DisplayString
    MAX-ACCESS  accessible-for-notify
    STATUS      current
    DESCRIPTION
        "One line for the operator explaining the alert."
    ::= {{ arbObjects 5 }}
"""

_NOTIFICATION = """
{name} NOTIFICATION-TYPE
    OBJECTS     {{ {objects} }}
    STATUS      current
    DESCRIPTION
        "{text} (event {event}, severity {severity})."
    ::= {{ arbNotifications {number} }}
"""

_CONFORMANCE = """
arbObjectGroup OBJECT-GROUP
    OBJECTS     {{ {objects} }}
    STATUS      current
    DESCRIPTION
        "Objects carried by every notification."
    ::= {{ arbGroups 1 }}

arbNotificationGroup NOTIFICATION-GROUP
    NOTIFICATIONS {{
{notifications}
                }}
    STATUS      current
    DESCRIPTION
        "Every notification the appliance sends."
    ::= {{ arbGroups 2 }}

arbCompliance MODULE-COMPLIANCE
    STATUS      current
    DESCRIPTION
        "A manager receiving the appliance's alerts."
    MODULE      -- this module
        MANDATORY-GROUPS {{ arbObjectGroup, arbNotificationGroup }}
    ::= {{ arbCompliances 1 }}

END
"""


def _list(items: list[str], indent: str = "                    ") -> str:
    return ",\n".join(indent + item for item in items)


def _sentence(text: str) -> str:
    """Table text as a MIB DESCRIPTION: capitalised, without the double quote that ends it."""
    text = text.replace('"', "'")
    return text[:1].upper() + text[1:]


def render_mib(enterprise_oid: str = DEFAULT_ENTERPRISE) -> str:
    """The whole module text for ``enterprise_oid`` (1.3.6.1.4.1.N)."""
    number = _enterprise_number(enterprise_oid)
    events = sorted(EVENTS.values(), key=lambda e: e.number)
    parts = [_HEADER.format(module=MODULE, updated=_LAST_UPDATED, enterprise=enterprise_oid,
                            number=number)]
    parts.append(_OBJECTS.format(severities=_list([f"{s.name.lower()}({s.value})" for s in Severity])))
    for e in events:
        parts.append(_NOTIFICATION.format(name=notification_name(e.name), objects=", ".join(OBJECTS),
                                          text=_sentence(e.text), event=e.name,
                                          severity=e.severity.name.lower(), number=e.number))
    parts.append(_CONFORMANCE.format(objects=", ".join(OBJECTS),
                                     notifications=_list([notification_name(e.name) for e in events])))
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware.mib",
                                     description=f"Print {MODULE} for a site's enterprise arc.")
    parser.add_argument("--enterprise", default=DEFAULT_ENTERPRISE,
                        help=f"the site's registered arc, 1.3.6.1.4.1.N (default {DEFAULT_ENTERPRISE})")
    args = parser.parse_args(argv)
    try:
        text = render_mib(args.enterprise)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
