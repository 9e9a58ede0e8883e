#!/usr/bin/env python3
"""Writes the committed seed inputs under fuzz/seeds/<target>/.

Run from anywhere: python3 fuzz/seeds/make_seeds.py. The files are small and
deterministic; rerunning rewrites them byte for byte. The backend_rings input
format is documented at the top of fuzz_targets/backend_rings.rs.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


# --- ipoib_parsers ---------------------------------------------------------

def hwaddr(qpn, gid):
    return struct.pack(">I", qpn & 0xFFFFFF) + gid


def link_local(n):
    return bytes([0xFE, 0x80] + [0] * 6) + struct.pack(">Q", n)


BCAST_MGID = bytes([0xFF, 0x12, 0x40, 0x1B, 0xFF, 0xFF] + [0] * 6 + [0xFF] * 4)
MCAST_MGID = bytes([0xFF, 0x12, 0x40, 0x1B, 0xFF, 0xFF] + [0] * 6 + [0x00, 0x00, 0x00, 0xFB])

# ARP request, IPoIB style (hardware type 32, 20-byte hardware addresses).
arp = (struct.pack(">HHBBH", 32, 0x0800, 20, 4, 1)
       + hwaddr(0x49, link_local(1)) + bytes([10, 77, 0, 1])
       + hwaddr(0, bytes(16)) + bytes([10, 77, 0, 2]))
assert len(arp) == 56
arp_reply = (struct.pack(">HHBBH", 32, 0x0800, 20, 4, 2)
             + hwaddr(0x4A, link_local(2)) + bytes([10, 77, 0, 2])
             + hwaddr(0x49, link_local(1)) + bytes([10, 77, 0, 1]))
write("ipoib_parsers", "arp_request", arp)
write("ipoib_parsers", "arp_reply", arp_reply)
# Encapsulation header (EtherType ARP) followed by the ARP packet.
write("ipoib_parsers", "encap_arp", struct.pack(">HH", 0x0806, 0) + arp)
# Encapsulation header for IPv4 and a minimal IPv4 header.
write("ipoib_parsers", "encap_ipv4",
      struct.pack(">HH", 0x0800, 0) + bytes([0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2]))
# A hardware address with the broadcast MGID (also an MGID at offset 4).
write("ipoib_parsers", "hwaddr_bcast", hwaddr(0xFFFFFF, BCAST_MGID))
write("ipoib_parsers", "mgid_bcast", BCAST_MGID)
write("ipoib_parsers", "mgid_ipv4_mcast", MCAST_MGID)
# A GRH: version 6, payload length, next header 0x1b, hop limit 1, SGID, DGID.
grh = struct.pack(">IHBB", 6 << 28, 60, 0x1B, 1) + link_local(2) + BCAST_MGID
assert len(grh) == 40
write("ipoib_parsers", "grh_bcast", grh)
write("ipoib_parsers", "grh_arp", grh + struct.pack(">HH", 0x0806, 0) + arp)

# --- backend_rings ---------------------------------------------------------

# Ops (see backend_rings.rs).
RAW, RAW_DENSE, SERVICE, ARM, DRAIN, PUSH_RAW, TX, RX, CTRL, INDEX, HDR, PEER_SEND, PEER_REAP, CLOSE, OOB = (
    0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)


def flags(preset=0, hostile=False, faults=False, mtu_code=4, peer_joins=True):
    return preset | (4 if hostile else 0) | (8 if faults else 0) | ((mtu_code - 1) << 4) | (0 if peer_joins else 0x80)


def config(max_dests=4, batch=8, limited=False, filtered=False):
    return (max_dests - 1) | ((batch - 1) << 2) | (0x40 if filtered else 0) | (0x80 if limited else 0)


def post_all_rx():
    return [RX, 3]


def resolve(gid_sel):
    # sel 0 = RESOLVE, gid selector, arg byte.
    return [CTRL, 0, gid_sel, 0]


def attach(gid_sel):
    return [CTRL, 3, gid_sel, 0]


def detach(gid_sel):
    return [CTRL, 5, gid_sel, 0]


def release(handle):
    return [CTRL, 2, 0, handle]


def tx(slot, length, dest, qpn_sel=0, payload=b""):
    sel = 0x40 if payload else 0
    out = [TX, sel, slot] + list(struct.pack("<H", length - 1)) + [dest, qpn_sel]
    if payload:
        out += [len(payload)] + list(payload)
    return out


def peer_send(length, bcast=False, fill=0x41):
    return [PEER_SEND, 1 if bcast else 0] + list(struct.pack("<H", length)) + [fill]


traffic = (post_all_rx() + [SERVICE]
           + resolve(0) + [DRAIN]
           + tx(0, 100, 0, payload=b"\x08\x00\x00\x00E") + [DRAIN]
           + peer_send(200) + [DRAIN, PEER_REAP]
           + attach(3) + resolve(3) + [DRAIN]
           + tx(1, 60, 1, qpn_sel=3) + [DRAIN]
           + peer_send(120, bcast=True) + [DRAIN]
           + release(0) + detach(3) + [DRAIN, ARM]
           + [CLOSE, 0])

write("backend_rings", "traffic", [flags(), config()] + traffic)
write("backend_rings", "traffic_filtered", [flags(), config(filtered=True)] + traffic)
write("backend_rings", "traffic_faults",
      [flags(preset=2, faults=True), config(batch=3)] + list(struct.pack("<I", 12345)) + traffic)
write("backend_rings", "traffic_mtu256", [flags(preset=3, mtu_code=1), config(max_dests=1, batch=16)] + traffic)

# Hostile handshake with valid parameters for preset 0 (fits 64 KiB).
params = bytes([2, 3, 3, 0]) + struct.pack("<HHI", 8, 8, 256)
write("backend_rings", "handshake_ok", [flags(hostile=True), config()] + list(params) + [0] + traffic)
# Hostile handshake: epoch mismatch, and parameters that do not fit.
write("backend_rings", "handshake_bad_epoch",
      [flags(hostile=True), config()] + list(params) + [1] + list(struct.pack("<I", 8)))
write("backend_rings", "handshake_too_big",
      [flags(hostile=True), config()] + list(bytes([12, 12, 12, 0]) + struct.pack("<HHI", 4096, 4096, 65536)) + [0])

# Ring abuse on the tiny preset: wrap the rings, then overrun them.
wrap = []
for _ in range(6):
    wrap += post_all_rx() + [DRAIN] + peer_send(50) + peer_send(50) + [DRAIN, PEER_REAP]
wrap += [INDEX, 2, 4] + list(struct.pack("<I", 0x1000)) + [SERVICE]
write("backend_rings", "wrap_then_overflow", [flags(preset=1), config(batch=1)] + wrap)

# Raw writes: a descriptor written straight into the TX request array and a
# req_prod bump, then a raw control request with an unknown op.
raw = post_all_rx() + [SERVICE]
raw += [PUSH_RAW, 1] + list(struct.pack("<HHIIIII", 0, 0, 64, 0, 0x4A, 0xB1B, 0)) + [0] * 8
raw += [SERVICE]
raw += [PUSH_RAW, 0] + list(struct.pack("<HHI", 99, 0, 1)) + [0] * 24 + [SERVICE]
write("backend_rings", "raw_descriptors", [flags(), config()] + raw)

# Header page scribbles and out-of-bounds writes, then a guest close via the
# state word.
hdr = [RAW, 0] + list(struct.pack("<I", 0)) + [8, 1, 2, 3, 4, 5, 6, 7, 8]
hdr += [RAW, 1] + list(struct.pack("<I", 0xFFFFFFF0)) + [64] + [0xAA] * 64
hdr += [HDR, 1] + list(struct.pack("<I", 99)) + [SERVICE]
hdr += [HDR, 0] + list(struct.pack("<I", 5)) + [SERVICE, ARM, OOB, 1, 3]
write("backend_rings", "header_scribble", [flags(), config()] + post_all_rx() + [SERVICE] + hdr)

# --- front_hca --------------------------------------------------------------
# Ops (see fuzz_targets/front_hca.rs): 0 post RX, 1 post TX (len u16),
# 3 flush, 4 poll, 6 back end takes requests, 7 complete TX (status u8),
# 8 deliver (len u16, src_qpn u32, flags u8), 9 forged response.
POST_RX, POST_TX, FLUSH, POLL, TAKE, COMPLETE, DELIVER, FORGE = 0, 1, 3, 4, 6, 7, 8, 9
honest = [POST_RX] * 4 + [POST_TX] + list(struct.pack("<H", 100)) + [FLUSH, TAKE]
honest += [COMPLETE, 0] + [DELIVER] + list(struct.pack("<HIB", 140, 0x99, 1)) + [POLL] * 4
write("front_hca", "honest", honest)
# A forged RX response for slot 7, never posted.
forged = [POST_RX, FLUSH, TAKE, FORGE, 0] + list(struct.pack("<HHIIHHHHI", 7, 0, 100, 0x99, 2, 1, 0xFFFF, 0, 0))
write("front_hca", "forged_rx", forged + [POLL] * 4)

# --- ipoib_rx ----------------------------------------------------------------
# One datagram: sel u8, src_qpn u32, len u16, [grh], payload. sel 2 + 4:
# the harness's own GRH (source fe80::2), GRH flag set, QPN taken from the
# ARP sender. The honest ARP claims qpn 0x99 at fe80::2.
SELF_GID = link_local(1)
PEER_GID = link_local(2)
def ipoib_arp(op, sender_qpn, sender_gid, sender_ip, target_ip):
    return (struct.pack(">HH", 0x0806, 0)
            + struct.pack(">HHBBH", 32, 0x0800, 20, 4, op)
            + hwaddr(sender_qpn, sender_gid) + bytes(sender_ip)
            + hwaddr(0, bytes(16)) + bytes(target_ip))
honest_arp = ipoib_arp(1, 0x99, PEER_GID, [10, 77, 0, 2], [10, 77, 0, 1])
write("ipoib_rx", "honest_arp",
      [2 | 4] + list(struct.pack("<IH", 0x99, len(honest_arp))) + list(honest_arp))
spoofed_arp = ipoib_arp(2, 0x77, link_local(9), [10, 77, 0, 3], [10, 77, 0, 1])
write("ipoib_rx", "spoofed_arp",
      [2] + list(struct.pack("<IH", 0x99, len(spoofed_arp))) + list(spoofed_arp))
ping = (struct.pack(">HH", 0x0800, 0)
        + bytes([0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1])
        + bytes([8, 0, 0xF7, 0xFF, 0, 0, 0, 0]))
write("ipoib_rx", "ipv4_icmp", [2] + list(struct.pack("<IH", 0x99, len(ping))) + list(ping))

# --- ivshmem_client ------------------------------------------------------------
# vectors u8, then ops: 0 message (value sel), 1 message + eventfd,
# 2 message + memfd (size sel first). Value sels: 0 version, 1 id u8,
# 2 -1, 3 id u16.
handshake = [1, 0, 0, 0, 1, 1, 2, 0, 2, 1, 1, 1, 1, 3, 5, 0, 0, 3, 5, 0]
write("ivshmem_client", "handshake_then_peer", handshake)
write("ivshmem_client", "split_message", [0, 0, 0, 3, 4, 1, 0, 0, 0, 3, 4, 0, 0, 0, 0])

# --- dhcp ----------------------------------------------------------------------
# DHCP messages as RFC 4390 has them over IPoIB: htype 32, hlen 0, zero
# chaddr, BROADCAST, a client identifier (type 255, IAID, DUID-LL of the
# 20-byte IPoIB address).
def dhcp(op, xid, yiaddr, options):
    head = (struct.pack(">BBBBIHH", op, 32, 0, 0, xid, 0, 0x8000)
            + bytes(4) + bytes(yiaddr) + bytes(8) + bytes(16) + bytes(64 + 128)
            + bytes([99, 130, 83, 99]))
    assert len(head) == 240
    return head + bytes(options) + bytes([255])
client_id = [61, 29, 0xFF, 0, 0, 0, 1, 0, 3, 0, 32] + list(hwaddr(0x49, link_local(1)))
write("dhcp", "discover", dhcp(1, 0x01020304, [0] * 4, [53, 1, 1] + client_id + [55, 5, 1, 3, 51, 58, 59]))
write("dhcp", "ack", dhcp(2, 0x01020304, [10, 77, 0, 2],
                          [53, 1, 5] + client_id + [54, 4, 10, 77, 0, 254, 1, 4, 255, 255, 255, 0,
                                                    3, 4, 10, 77, 0, 1, 51, 4, 0, 0, 14, 16]))
