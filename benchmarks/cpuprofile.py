"""Where each service's CPU went, from the stacks ``qubus.bus.sampler`` wrote: each file's
samples by kind (``qubus.bus.sampler.KINDS``), as shares.

    python benchmarks/cpuprofile.py DIR [--json]

``benchmarks/fastpath.py --profile DIR`` prints them as ms a task.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qubus.bus.sampler import KINDS, by_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    try:
        found = by_service(list(args.folder.glob("*.txt")))
    except ValueError as exc:
        parser.error(str(exc))
    if not found:
        parser.error(f"no profiles (*.txt) in {args.folder}")
    if args.json:
        print(json.dumps(found))
        return
    print(f"{'service':<10}" + "".join(f"{k:>14}" for k in KINDS))
    for service, share in found.items():
        print(f"{service:<10}" + "".join(f"{100 * share[k]:>13.1f}%" for k in KINDS))


if __name__ == "__main__":
    main()
