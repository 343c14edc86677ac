"""What keying the decoded-image cache by the files' bytes costs (issue 23, item 6).

Times, in separate processes taking turns, the cache key of an image folder computed from
each file's size and modification time (the old key, the baseline) and from each file's
bytes (`cifar_cnn.training.data.fingerprint`, the key now), and for scale, loading the cache
itself (every round) and decoding the folder (once, with `--decode`). The page cache is warm
for both keys (the first round is left out); a cold read costs what the disk does.

    python benchmarks/cache_key.py DATA_ROOT [--rounds 5] [--decode]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _files(root: Path) -> list[Path]:
    from cifar_cnn.training.images import folder_files

    return [p for split in ("train", "test") for p, _ in folder_files(root, split)]


def stat_key(paths: list[Path]) -> str:
    """The old key: names, sizes and modification times."""
    digest = hashlib.sha1(b"1")
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def one(kind: str, root: Path) -> float:
    """Seconds one `kind` takes on `root`, in this process."""
    from cifar_cnn.training.data import CACHE_NAME, fingerprint
    from cifar_cnn.training.images import decode_folder, folder_files

    files = _files(root)
    started = time.perf_counter()
    if kind == "stat":
        stat_key(files)
    elif kind == "bytes":
        fingerprint(files)
    elif kind == "load":
        import torch

        torch.load(root / CACHE_NAME, weights_only=True)
    elif kind == "decode":
        decode_folder([f for split in ("train", "test") for f in folder_files(root, split)])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="an image folder (train/<class>/, test/<class>/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decode", action="store_true", help="time decoding once, for scale")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.root)))
        return
    from cifar_cnn.training.data import load_arrays

    load_arrays("folder", args.root)  # builds the cache (and warms the page cache)
    kinds = ("stat", "bytes", "load")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for round_ in range(args.rounds + 1):
        for kind in kinds if round_ % 2 else reversed(kinds):  # alternate the order
            out = subprocess.run(
                [sys.executable, __file__, str(args.root), "--one", kind],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            if round_:  # the first round warms the page cache
                times[kind].append(float(out.stdout.strip().splitlines()[-1]))
    files = len(_files(args.root))
    print(f"{files} files in {args.root}, {args.rounds} rounds (median, min-max seconds):")
    for kind in kinds:
        t = times[kind]
        print(f"  {kind:<7} {statistics.median(t):7.3f}  {min(t):.3f}-{max(t):.3f}")
    if args.decode:
        print(f"  decode  {one('decode', args.root):7.3f}  (once)")


if __name__ == "__main__":
    main()
