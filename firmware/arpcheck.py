"""The appliance's proof that the virtual IP moved: who answers ARP for it?

Exactly the new primary's MAC: taken over. None: not taken over. Two: split brain suspected.
scapy is imported lazily and only from scapy.layers.l2 / scapy.sendrecv.
"""
from __future__ import annotations


def probe(ip: str, interface: str, timeout: float = 0.3, count: int = 2) -> frozenset[str]:
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp

    request = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, pdst=ip)
    macs: set[str] = set()
    for _ in range(count):
        answered, _unanswered = srp(request, iface=interface, timeout=timeout, multi=True, verbose=False)
        macs |= {reply[ARP].hwsrc.lower() for _sent, reply in answered}
    return frozenset(macs)
