#!/usr/bin/env python3
"""Seeds for the `endpoint` fuzz target (tests/fuzz_endpoint.rs): op sequences
that register devices d0..d2, answer the server's requests, notify with the
payloads a real client (Anjay 3.14, tests/data/real-client.json) sent, Send
them over POST /dp as raw datagrams, and let time pass."""
import json, os, struct

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "tests", "data", "fuzz", "endpoint")
vectors = json.load(open(os.path.join(here, "..", "tests", "data", "real-client.json")))

def op(kind, peer, data):
    data = bytes(data)[:255]
    return bytes([kind, peer, len(data)]) + data

def option(number, last, value):
    delta = number - last
    head, ext = [], b""
    def nib(n):
        if n < 13: return n, b""
        if n < 269: return 13, bytes([n - 13])
        return 14, struct.pack(">H", n - 269)
    d, de = nib(delta); l, le = nib(len(value))
    return bytes([(d << 4) | l]) + de + le + value

def send_dp(mid, fmt, payload):
    # CON POST /dp, token 0x42, Content-Format fmt.
    b = bytes([0x41, 0x02]) + struct.pack(">H", mid) + b"\x42"
    b += option(11, 0, b"dp")
    b += option(12, 11, bytes([fmt]) if fmt < 256 else struct.pack(">H", fmt))
    return b + b"\xff" + payload

seeds = []
for i, v in enumerate(vectors[:40]):
    payload = bytes.fromhex(v["hex"])
    fmt = v["format"]
    seq = b""
    for peer in range(3):
        seq += op(1, peer, [peer, 0, 40])          # Register d<peer>
    seq += op(3, 0, [0x45, 0, 2 | 1] + [0] + list(payload[:200]))  # answer with the payload
    seq += op(4, 0, [0, 5] + list(payload[:200]))                 # a notification
    seq += op(0, 1, send_dp(0x100 + i, fmt, payload[:200]))        # a Send, raw
    seq += op(5, 0, [0x10, 0x00])                                  # time passes
    seq += op(3, 1, [0x44, 1, 0])                                  # 2.04 to the next request
    seq += op(2, 2, [1, 3])                                        # an Update with lt
    seq += op(6, 0, [3, 9, 27])                                    # the server's datagram mutated
    seeds.append(bytes([i % 16]) + seq)

os.makedirs(out, exist_ok=True)
for i, s in enumerate(seeds):
    open(os.path.join(out, f"seed-{i:02}"), "wb").write(s)
print(len(seeds), "seeds in", out)
