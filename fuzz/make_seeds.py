#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the spec vectors.

Reads the payloads (bytes only) of shared/vectors/*.json (fields `format`,
`path`, `hex`) and the hex and JSON examples of shared/spec/*.md, and writes each
as a fuzz input -- one selector byte choosing the request path (see
tests/fuzz_corpus.rs), then the payload -- to fuzz/corpus/<target>/seed-<name>.

    python3 fuzz/make_seeds.py [--shared DIR] [--out DIR] [--max-size N]

--shared defaults to ../shared beside the repository; --out to fuzz/corpus;
payloads longer than --max-size (4096) bytes are skipped so that libFuzzer's
-max_len stays small.
"""

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Must match TREE_PATHS and VALUE_PATHS in tests/fuzz_corpus.rs.
TREE_PATHS = ["/", "/3", "/3/0", "/5/0", "/5/0/3", "/5/0/8", "/3/0/6/1", "/32769/0"]
VALUE_PATHS = [
    "/5/0/3", "/5/0/8", "/3/0/6/1", "/5/0/0", "/5/0/1", "/5/0/5", "/5/0/12", "/5/0/13",
    "/5/0/14", "/3/0/22/0", "/5/0/2", "/32769/0/1", "/32769/0/1/0", "/3/0/3", "/1/0/1", "/5/0/9",
]
# Data types of the value paths above, for vectors whose own path is not listed.
VALUE_TYPES = [
    "integer", "integer", "integer", "opaque", "string", "integer", "time", "unsigned",
    "boolean", "objlnk", "none", None, None, "string", "integer", "integer",
]

FORMAT_TARGET = {11542: "tlv", 1542: "tlv", 112: "senml_cbor", 110: "senml_json", 11544: "lwm2m_cbor",
                 11543: "lwm2m_json", 1543: "lwm2m_json", 0: "text", 42: "opaque", 60: "cbor"}
TREE_TARGETS = {"tlv", "senml_cbor", "senml_json", "lwm2m_cbor", "lwm2m_json"}


def segments(path):
    return [int(s) for s in path.strip("/").split("/") if s]


def tree_selector(target, path):
    """Exact path, else the longest listed prefix the format can answer, else a
    listed path of the same depth (TLV cannot answer `/`)."""
    if path in TREE_PATHS:
        return TREE_PATHS.index(path)
    seg = segments(path)
    best = None
    for i, candidate in enumerate(TREE_PATHS):
        c = segments(candidate)
        if seg[:len(c)] == c and not (target == "tlv" and not c):
            if best is None or len(c) > len(segments(TREE_PATHS[best])):
                best = i
    if best is not None:
        return best
    by_depth = {1: "/3", 2: "/32769/0", 3: "/5/0/3", 4: "/3/0/6/1"}
    return TREE_PATHS.index(by_depth.get(len(seg), "/32769/0"))


def value_selector(path, data_type=None):
    if path in VALUE_PATHS:
        return VALUE_PATHS.index(path)
    if data_type in VALUE_TYPES:
        return VALUE_TYPES.index(data_type)
    return VALUE_PATHS.index("/32769/0/1")


def selector(target, path, data_type=None):
    if target in TREE_TARGETS:
        return tree_selector(target, path)
    return value_selector(path, data_type)


def unhex(text):
    return bytes.fromhex(re.sub(r"\s+", "", text))


def spec_seeds(spec):
    """(target, name, path, payload) from the examples in shared/spec/*.md."""
    seeds = []
    senml = open(os.path.join(spec, "senml-cbor.md"), encoding="utf-8").read()
    # §8 table: | V1 | 196 | `hex` |
    for name, hx in re.findall(r"^\| (V\d) \| \d+ \| `([0-9a-f]+)` \|", senml, re.M):
        seeds.append(("senml_cbor", "spec-senml-cbor-" + name, "/", unhex(hx)))
        if name == "V5":
            seeds.append(("senml_paths", "spec-senml-cbor-" + name, "cbor", unhex(hx)))
    # Additional small vectors: | Case | `hex` | diagnostic |
    for case, hx in re.findall(r"^\| ([^|`]+?) \| `([0-9a-f ]+)` \|", senml, re.M):
        slug = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
        seeds.append(("senml_cbor", "spec-senml-cbor-" + slug, "/", unhex(hx)))
    # RFC 8428 example, one line in a code block.
    rfc = re.search(r"```\n(87a7[0-9a-f]+)\n```", senml)
    if rfc:
        seeds.append(("senml_cbor", "spec-senml-cbor-rfc8428", "/", unhex(rfc.group(1))))
    # §7 SenML-JSON examples (V1..V7) and the opaque one.
    for name, body in re.findall(r"\*\*(V\d) [^*]*\*\*[^\n]*\n```json\n(.*?)\n```", senml, re.S):
        payload = body.replace("\n ", "").encode()
        path = {"V1": "/3/0", "V4": "/3/0"}.get(name, "/")
        seeds.append(("senml_json", "spec-senml-json-" + name, path, payload))
        if name == "V5":
            seeds.append(("senml_paths", "spec-senml-json-" + name, "json", payload))
    for variant in re.findall(r"`(\[\{\"bn\":\"/72/1/2\".*?\])`", senml):
        seeds.append(("senml_json", "spec-senml-json-V2-variant", "/", variant.encode()))
    alt = re.search(r"Equivalent form seen in other suites: `(.*?)`", senml)
    if alt:
        seeds.append(("senml_paths", "spec-senml-json-V5-variant", "json", alt.group(1).encode()))
    opaque = re.search(r"\| Opaque in SenML JSON \| `(.*?)` \|", senml)
    if opaque:
        seeds.append(("senml_json", "spec-senml-json-opaque", "/5/0/0", opaque.group(1).encode()))
    # §9 LwM2M JSON (historical example) and the object form of V1.
    hist = re.search(r"historical:\n`(\{.*?\})`", senml)
    if hist:
        seeds.append(("lwm2m_json", "spec-lwm2m-json-historical", "/", hist.group(1).encode()))
    v1 = re.search(r"\*\*V1 [^*]*\*\*\n```json\n(.*?)\n```", senml, re.S)
    if v1:
        entries = json.loads(v1.group(1))
        entries[0].pop("bn")
        body = json.dumps({"bn": "/3/0/", "e": [{"n": e["n"], ("sv" if "vs" in e else "v"): e.get("vs", e.get("v"))}
                                                 for e in entries]}, separators=(",", ":"))
        seeds.append(("lwm2m_json", "spec-lwm2m-json-read-3-0", "/3/0", body.encode()))
        timed = {"bn": "/3/0/", "bt": 1367491215, "e": [{"n": "9", "v": 100, "t": -5}, {"n": "9", "v": "95", "t": 0},
                                                       {"n": "13", "v": 1367491215}, {"n": "22/0", "ov": "66:0"},
                                                       {"n": "14", "sv": "+02:00"}]}
        seeds.append(("lwm2m_json", "spec-lwm2m-json-timed", "/3/0",
                      json.dumps(timed, separators=(",", ":")).encode()))
        fw = {"bn": "/5/0/", "e": [{"n": "0", "sv": "AQIDBAU="}, {"n": "3", "v": 1}, {"n": "14", "bv": True},
                                   {"n": "13", "v": 300}, {"n": "8/0", "v": 0}, {"n": "8/1", "v": 1}]}
        seeds.append(("lwm2m_json", "spec-lwm2m-json-5-0", "/5/0", json.dumps(fw, separators=(",", ":")).encode()))
    # §10 LwM2M-CBOR table and the Server fragment (wrapped under /1/0).
    rows = re.findall(r"^\| (.+?) \| `([0-9A-F ]+)` \|\s*$", senml, re.M)
    for i, (diag, hx) in enumerate(rows):
        slug = re.sub(r"[^a-z0-9]+", "-", diag.lower()).strip("-")[:40]
        seeds.append(("lwm2m_cbor", f"spec-lwm2m-cbor-{i}-{slug}", "/", unhex(hx)))
    server = re.search(r"encoded as\n  `(A7[0-9A-F ]+)`", senml)
    if server:
        seeds.append(("lwm2m_cbor", "spec-lwm2m-cbor-server-1-0", "/", unhex("A1 82 01 00" + server.group(1))))
    # Single CBOR data items taken from those vectors (Content-Format 60).
    for name, hx, data_type in [
        ("int-42", "182a", "integer"), ("int-minus-1", "20", "integer"), ("half-2.5", "f94100", None),
        ("half-300", "f95cb0", None), ("double-0.1", "fb3fb999999999999a", None),
        ("decimal-4.5", "c482201 82d", None), ("text-test", "6474657374", "string"),
        ("bytes", "4411223344", "opaque"), ("objlnk", "6436363a30", "objlnk"), ("true", "f5", "boolean"),
        ("time", "1a5182428f", "time"), ("epoch-time", "c11a5182428f", "time"),
        ("unsigned-200", "18c8", "unsigned"), ("indefinite-text", "7f62616262636464ff", "string"),
    ]:
        seeds.append(("cbor", "spec-cbor-" + name, data_type, unhex(hx)))
    # Plain-text forms of values the TLV examples of tlv.md carry (Content-Format 0).
    for name, text, data_type in [
        ("time", "1367491215", "time"), ("objlnk", "66:0", "objlnk"), ("null-objlnk", "65535:65535", "objlnk"),
        ("boolean", "1", "boolean"), ("opaque-base64", "AQIDBAU=", "opaque"), ("unsigned", "200", "unsigned"),
        ("integer-minus-1", "-1", "integer"), ("utc-offset", "+02:00", "string"), ("float", "22.4", None),
    ]:
        seeds.append(("text", "spec-text-" + name, data_type, text.encode()))
    return seeds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    parser.add_argument("--out", default=os.path.join(ROOT, "fuzz", "corpus"))
    parser.add_argument("--max-size", type=int, default=4096)
    args = parser.parse_args()

    written = {}

    def write(target, name, sel, payload):
        if len(payload) > args.max_size:
            return
        folder = os.path.join(args.out, target)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "seed-" + name), "wb") as f:
            f.write(bytes([sel]) + payload)
        written[target] = written.get(target, 0) + 1

    vectors_dir = os.path.join(args.shared, "vectors")
    for file in sorted(os.listdir(vectors_dir)):
        if not file.endswith(".json"):
            continue
        for v in json.load(open(os.path.join(vectors_dir, file), encoding="utf-8")):
            target = FORMAT_TARGET.get(v["format"])
            if target is None:
                continue
            payload = bytes.fromhex(v["hex"])
            data_type = v["expect"][0]["type"] if len(v.get("expect", [])) == 1 else None
            write(target, v["name"], selector(target, v["path"], data_type), payload)
            if target == "text":
                # Text payloads are bytes an opaque resource may hold too.
                write("opaque", v["name"], VALUE_PATHS.index("/5/0/0"), payload)
                write("opaque", v["name"] + "-unknown", VALUE_PATHS.index("/32769/0/1"), payload)
            if target == "senml_cbor":
                write("senml_paths", v["name"], 0, payload)
            if target == "senml_json":
                write("senml_paths", v["name"], 1, payload)

    for target, name, path, payload in spec_seeds(os.path.join(args.shared, "spec")):
        if target == "senml_paths":
            sel = 0 if path == "cbor" else 1
        elif target in ("cbor", "text"):
            sel = value_selector("", path)
        else:
            sel = selector(target, path)
        write(target, name, sel, payload)
        if target == "senml_cbor":
            write("senml_paths", name, 0, payload)
        if target == "senml_json":
            write("senml_paths", name, 1, payload)
        if target == "cbor" and path is not None:
            write("cbor", name + "-unknown", VALUE_PATHS.index("/32769/0/1"), payload)

    for target in sorted(written):
        print(f"{target}: {written[target]} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
