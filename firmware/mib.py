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
from firmware.model import LinkState, Role
from firmware.site_state import Phase

DEFAULT_ENTERPRISE = "1.3.6.1.4.1.64400"
MODULE = "BILLMASTER-ARBITER-MIB"
_ENTERPRISES = "1.3.6.1.4.1"
_LAST_UPDATED = "202501010000Z"

# The module sits on the enterprise arc; under it: notifications (0), objects (1), conformance (2).
OBJECTS = ("arbEventSeq", "arbEventSeverity", "arbEventServer", "arbEventChannel", "arbEventText")


def _enum(words: list[str]) -> str:
    """An SMI enumeration numbered from 1, names without hyphens (taking-ip -> takingIp)."""
    names = [w.split("-")[0] + "".join(p.capitalize() for p in w.split("-")[1:]) for w in words]
    return "INTEGER { " + ", ".join(f"{n}({i})" for i, n in enumerate(names, start=1)) + " }"


PHASES = [p.value for p in Phase]
LINK_STATES = [s.value for s in LinkState]
ROLES = [r.value for r in Role]
TRI = ["true", "false", "unknown"]
SEVERITY_ENUM = "INTEGER { " + ", ".join(f"{s.name.lower()}({s.value})" for s in Severity) + " }"
GAUGE_MAX = 2**32 - 1

# The status objects under arbStatus (arbObjects 10): scalars (instance .0) and the server
# table's columns (arbServerTable = arbStatus 20, entry 1, indexed by the server's position in
# the config, from 1). (name, number, syntax, description); the responder and the MIB read them.
STATUS = "arbStatus"
STATUS_ARC = 10
SERVER_TABLE_ARC = 20
STATUS_SCALARS = (
    ("arbPhase", 1, _enum(PHASES), "The phase the appliance is in."),
    ("arbPhaseSeconds", 2, "Unsigned32", "Seconds since the phase began."),
    ("arbPrimary", 3, "DisplayString (SIZE (0..32))", "Name of the primary server; empty when none is known."),
    ("arbFailovers", 4, "Counter32", "Failovers completed since the appliance's state was created."),
    ("arbAlarmSeverity", 5, SEVERITY_ENUM, "Severity of the most severe active alert (the alarm relay)."),
    ("arbMaintenance", 6, "TruthValue", "True while the appliance only observes (maintenance)."),
)
SERVER_COLUMNS = (
    ("arbServerName", 2, "DisplayString (SIZE (1..32))", "The server's name in the config."),
    ("arbServerRole", 3, _enum(ROLES), "The role the server's agent reports."),
    ("arbServerAlive", 4, _enum(TRI), "True if any heartbeat link answers, false if every link is dead."),
    ("arbServerFenced", 5, "TruthValue", "True while the appliance holds the server fenced."),
    ("arbServerSerialLink", 6, _enum(LINK_STATES), "State of the serial heartbeat link."),
    ("arbServerLanLink", 7, _enum(LINK_STATES), "State of the LAN heartbeat link."),
    ("arbServerInSync", 8, _enum(TRI), "Whether the server's replica has every acknowledged transaction."),
    ("arbServerLagBytes", 9, "Gauge32", "Replication lag in bytes the agent reports; saturates at 4294967295."),
)


def status_oid(enterprise_oid: str) -> str:
    return f"{enterprise_oid}.1.{STATUS_ARC}"


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
    MODULE-IDENTITY, OBJECT-TYPE, NOTIFICATION-TYPE, Unsigned32, Integer32,
    Counter32, Gauge32, enterprises
        FROM SNMPv2-SMI
    DisplayString, TruthValue
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
         The status objects (arbStatus) can be read with GET, GETNEXT
         and GETBULK: the phase, the primary, the failovers and one
         row per server with its role, links, sync and lag.

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

_READ_ONLY = """
{name} OBJECT-TYPE
    SYNTAX      {syntax}
    MAX-ACCESS  read-only
    STATUS      current
    DESCRIPTION
        "{text}"
    ::= {{ {parent} {number} }}
"""

_TABLE = """
arbServerTable OBJECT-TYPE
    SYNTAX      SEQUENCE OF ArbServerEntry
    MAX-ACCESS  not-accessible
    STATUS      current
    DESCRIPTION
        "One row per configured server."
    ::= {{ arbStatus {table} }}

arbServerEntry OBJECT-TYPE
    SYNTAX      ArbServerEntry
    MAX-ACCESS  not-accessible
    STATUS      current
    DESCRIPTION
        "A server as the appliance sees it."
    INDEX       {{ arbServerIndex }}
    ::= {{ arbServerTable 1 }}

ArbServerEntry ::= SEQUENCE {{
{sequence}
}}

arbServerIndex OBJECT-TYPE
    SYNTAX      Integer32 (1..10)
    MAX-ACCESS  not-accessible
    STATUS      current
    DESCRIPTION
        "The server's position in the appliance's config, from 1."
    ::= {{ arbServerEntry 1 }}
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

arbStatusGroup OBJECT-GROUP
    OBJECTS     {{ {status} }}
    STATUS      current
    DESCRIPTION
        "The appliance's status, for polling."
    ::= {{ arbGroups 3 }}

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
        "A manager receiving the appliance's alerts and polling its status."
    MODULE      -- this module
        MANDATORY-GROUPS {{ arbObjectGroup, arbNotificationGroup, arbStatusGroup }}
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
    parts.append(f"\n{STATUS} OBJECT IDENTIFIER ::= {{ arbObjects {STATUS_ARC} }}\n")
    for name, num, syntax, text in STATUS_SCALARS:
        parts.append(_READ_ONLY.format(name=name, syntax=syntax, text=text, parent=STATUS, number=num))
    columns = [("arbServerIndex", 1, "Integer32", "")] + list(SERVER_COLUMNS)
    sequence = ",\n".join(f"    {n:<20} {syntax.split(' ')[0] if not syntax.startswith('INTEGER') else 'INTEGER'}"
                          for n, _, syntax, _ in columns)
    parts.append(_TABLE.format(table=SERVER_TABLE_ARC, sequence=sequence))
    for name, num, syntax, text in SERVER_COLUMNS:
        parts.append(_READ_ONLY.format(name=name, syntax=syntax, text=text, parent="arbServerEntry", number=num))
    for e in events:
        parts.append(_NOTIFICATION.format(name=notification_name(e.name), objects=", ".join(OBJECTS),
                                          text=_sentence(e.text), event=e.name,
                                          severity=e.severity.name.lower(), number=e.number))
    status = [n for n, *_ in STATUS_SCALARS] + [n for n, *_ in SERVER_COLUMNS]
    parts.append(_CONFORMANCE.format(objects=", ".join(OBJECTS), status=", ".join(status),
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
