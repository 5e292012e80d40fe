"""Fuzzing the decoder and preprocessing with Hypothesis: ``python bench/bench_fuzz.py [--inputs 10000]``.

Feeds damaged real images, random pictures and random bytes (tests/corpus/fuzz_inputs.py) to
``preprocess.to_mnist``; every input must give valid 28×28 inputs or a one-line MnistCnnError. Prints the
outcomes and writes bench/results/fuzz.json. (tests/test_fuzz.py runs a short seeded slice of the same.)
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "corpus")]
from bench.common import table, write_json  # noqa: E402


def main() -> None:
    from hypothesis import HealthCheck, given, settings
    from fuzz_inputs import check_to_mnist, inputs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    outcomes: collections.Counter = collections.Counter()

    @settings(max_examples=args.inputs, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def run(data: bytes) -> None:
        outcomes[check_to_mnist(data)] += 1

    t0 = time.perf_counter()
    run = __import__("hypothesis").seed(args.seed)(run)
    run()
    seconds = time.perf_counter() - t0
    rows = [{"outcome": k, "inputs": n} for k, n in outcomes.most_common()]
    print(table(rows, ["outcome", "inputs"]))
    total = sum(outcomes.values())
    print(f"{total} inputs, 0 crashes, {seconds:.0f} s ({1e3 * seconds / max(total, 1):.1f} ms per input)")
    write_json("fuzz", {"inputs": total, "outcomes": dict(outcomes), "crashes": 0, "seconds": round(seconds, 1),
                        "seed": args.seed})


if __name__ == "__main__":
    main()
