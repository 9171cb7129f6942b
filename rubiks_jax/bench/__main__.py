"""python -m rubiks_jax.bench SUITE [options]: run one benchmark suite, print its table, write JSON."""

from __future__ import annotations

import argparse
import json
import os

from rubiks_jax.bench import block, op

SUITES = {"op": op, "block": block}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rubiks_jax.bench", description=__doc__)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--json", default=None, help="write results here (default bench_out/SUITE.json)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per entry")
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats (smoke run)")
    args = parser.parse_args(argv)
    module = SUITES[args.suite]
    result = module.run(repeats=args.repeats, quick=args.quick)
    print(module.format_table(result))
    path = args.json or os.path.join("bench_out", f"{args.suite}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
