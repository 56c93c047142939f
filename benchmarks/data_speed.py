"""Dataset tooling speed on this machine: synthesising and validating comma10k-layout sets at the
native 874x1164 size (comma10k has ~10k pairs; its own CI validates every mask on each pull request).

    python benchmarks/data_speed.py [--n 100] [--out /tmp/x]

Prints a table of pairs/s for ``synth_dataset`` and ``validate_dataset`` (all checks, incl. image
hashes), and the extrapolated time for a 10,000-pair set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="image/mask pairs")
    ap.add_argument("--size", type=int, nargs=2, default=(874, 1164), help="H W")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()

    from drivelab.data.synth import synth_dataset
    from drivelab.data.validate import validate_dataset

    work = args.out or Path(tempfile.mkdtemp(prefix="drivelab-data-speed-"))
    t0 = time.perf_counter()
    root = synth_dataset("comma10k", work / "comma10k", n=args.n, size=tuple(args.size), seed=0)
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = validate_dataset(root, compute_hashes=True, progress=False)
    t_val = time.perf_counter() - t0
    assert report.ok, report.summary()

    print(f"comma10k layout, {args.n} pairs at {args.size[1]}x{args.size[0]}, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| step | seconds | pairs/s | 10k pairs |")
    print("|---|---|---|---|")
    for name, t in (("synth", t_synth), ("validate (all checks + sha1)", t_val)):
        print(f"| {name} | {t:.1f} | {args.n / t:.1f} | {10_000 * t / args.n / 60:.1f} min |")


if __name__ == "__main__":
    main()
