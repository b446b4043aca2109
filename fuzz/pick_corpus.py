#!/usr/bin/env python3
"""Chooses the committed corpus tests/data/fuzz/<target>/: at most --limit small
(<= --max-size bytes), coverage-rich inputs, as seed-* (spec vectors, kept from
the folder) and cov-<sha1 prefix> (copied from the fuzzed corpus fuzz/corpus/).

Runs the built fuzz target once in libFuzzer's -set_cover_merge mode over both folders,
only to read each input's features from the merge control file; then picks
greedily the input that adds the most features not yet covered (ties: the
smaller): first up to --seeds spec seeds, then any input. Seed and cov files
not picked are removed from the folder; crash-* and other files are left alone.
Needs `cargo fuzz build -s none` first; runs one fuzz process at a time.

    python3 fuzz/pick_corpus.py [--limit 30] [--seeds 10] [--max-size 256] [--bin-dir DIR] [TARGET...]
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["tlv", "senml_cbor", "senml_json", "lwm2m_cbor", "lwm2m_json", "text", "opaque", "cbor", "senml_paths"]
BINARIES = os.path.join(ROOT, "fuzz", "target", "x86_64-unknown-linux-gnu", "release")


def features(binary, dirs):
    """{file path: set of features} from a merge control file."""
    with tempfile.TemporaryDirectory() as tmp:
        control = os.path.join(tmp, "control")
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        subprocess.run(["nice", "-n", "15", binary, "-set_cover_merge=1", "-merge_control_file=" + control, out, *dirs],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(control, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    count = int(lines[0])
    files = lines[2:2 + count]
    result = {}
    for line in lines[2 + count:]:
        parts = line.split()
        if parts and parts[0] == "FT":
            result[files[int(parts[1])]] = set(parts[2:])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--max-size", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=10, help="spec seeds picked first, at most")
    parser.add_argument("--bin-dir", default=BINARIES, help="where the built fuzz targets are")
    parser.add_argument("targets", nargs="*", default=TARGETS)
    args = parser.parse_args()
    for target in args.targets:
        committed = os.path.join(ROOT, "tests", "data", "fuzz", target)
        fuzzed = os.path.join(ROOT, "fuzz", "corpus", target)
        os.makedirs(committed, exist_ok=True)
        feats = features(os.path.join(args.bin_dir, target), [committed, fuzzed])
        small = {p: f for p, f in feats.items() if os.path.getsize(p) <= args.max_size}
        seeds = {p: f for p, f in small.items() if os.path.basename(p).startswith("seed-")}
        fuzz = {p: f for p, f in small.items() if os.path.dirname(p) == fuzzed}
        covered, picked = set(), []

        def greedy(candidates, limit):
            while len(picked) < limit:
                best = max(candidates.items(), key=lambda kv: (len(kv[1] - covered), -os.path.getsize(kv[0])),
                           default=None)
                if best is None or not best[1] - covered:
                    return
                picked.append(best[0])
                covered.update(best[1])
                del candidates[best[0]]

        greedy(seeds, args.seeds)  # the spec vectors first, then whatever adds most
        greedy({**seeds, **fuzz}, args.limit)
        for name in os.listdir(committed):
            path = os.path.join(committed, name)
            if name.startswith(("seed-", "cov-")) and path not in picked:
                os.remove(path)
        for path in picked:
            if os.path.dirname(path) == fuzzed:
                data = open(path, "rb").read()
                shutil.copyfile(path, os.path.join(committed, "cov-" + hashlib.sha1(data).hexdigest()[:12]))
        n_seeds = sum(1 for p in picked if os.path.basename(p).startswith("seed-"))
        total = set().union(*feats.values()) if feats else set()
        print(f"{target}: {n_seeds} seed + {len(picked) - n_seeds} cov files, "
              f"features {len(covered)} of {len(total)} in the fuzzed corpus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
