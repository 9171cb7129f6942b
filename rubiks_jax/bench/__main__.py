"""python -m rubiks_jax.bench SUITE [options]: run one benchmark suite, print its table, write JSON.

Suites: op (the shift op, kernels vs pure XLA), block (3D-conv vs TSM vs RubiksShift block),
model (RubiksNet tiers vs TSM-ResNet50, clips/s).
`python -m rubiks_jax.bench.plots` draws the figures from the JSON files. The kernel developer's
tools (SASS report, memory model, GPU check) live in tools/ of the source tree.
"""

from __future__ import annotations

import argparse
import json
import os

from rubiks_jax.bench import block, model, op

SUITES = {"op": op, "block": block, "model": model}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rubiks_jax.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, module in SUITES.items():
        p = sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0])
        p.add_argument("--json", default=None, help=f"write results here (default bench_out/{name}.json)")
        p.add_argument("--repeats", type=int, default=None, help="timed repeats per entry")
        p.add_argument("--quick", action="store_true",
                       help="small shapes and few repeats (smoke run)")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
    args = vars(parser.parse_args(argv))
    suite, path = args.pop("suite"), args.pop("json")
    module = SUITES[suite]
    result = module.run(**args)
    print(module.format_table(result))
    path = path or os.path.join("bench_out", f"{suite}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
