"""Fuzzing the HTTP API against its OpenAPI schema: ``python bench/bench_api_fuzz.py [--requests 10000]``.

Starts ``mnist-cnn serve`` (the shipped model ``--checkpoint``, default ``tutorial``) on loopback and sends it
schemathesis requests generated from its /openapi.json (tests/corpus/api_fuzz.py): ``--requests`` in all, split
between positive (schema-valid; images from the fuzz corpus), negative (schema-violating) and mangled
(multipart bytes edited) requests, plus a probe of /api/health and /api/model every 100. Every answer must be
under 500 and conform to the schema, every negative request must get a 4xx, and the server's log must hold no
traceback. Prints the requests by endpoint, kind and status class (a negative request whose body cannot be
negated, a raw image, is sent and counted as a positive one); writes bench/results/api_fuzz.json.
(tests/test_api_fuzz.py runs a short seeded slice of the same.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "corpus")]
from bench.common import machine, table, write_json  # noqa: E402

SHARE = {"positive": 0.6, "negative": 0.2, "mangled": 0.2}
COLUMNS = ["endpoint", "kind", "requests", "2xx", "4xx", "5xx", "no answer", "statuses"]


def main() -> None:
    from api_fuzz import ApiFuzz
    from test_serve import running_server

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10_000, help="generated requests in all (probes not counted)")
    p.add_argument("--checkpoint", default="tutorial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="runs/api_fuzz", help="where the bodies of requests that may have caused "
                                                           "a traceback are written")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        t0 = time.perf_counter()
        with running_server(args.checkpoint, log) as (base, proc):
            fuzz = ApiFuzz(base, log, save_dir=ROOT / args.save)
            for i, (kind, share) in enumerate(SHARE.items()):
                want, sent, round_ = round(args.requests * share), 0, 0
                while sent < want:  # Hypothesis stops early when it finds nothing new: go on with another seed
                    more = fuzz.run(kind, want - sent, seed=args.seed + 1000 * i + round_)
                    sent, round_ = sent + more, round_ + 1
                    if not more:
                        break
                print(f"{kind}: {sent} requests, {time.perf_counter() - t0:.0f} s", flush=True)
        seconds = time.perf_counter() - t0
        fuzz.read_log()  # the lines written while it stopped too
        whole_log = log.read_text(errors="replace")
    rows = fuzz.rows()
    generated = sum(r["requests"] for r in rows if r["kind"] != "probe")
    total = sum(r["requests"] for r in rows)
    five_xx = sum(r["5xx"] for r in rows)
    unanswered = sum(r["no answer"] for r in rows)
    schema_violations = sum(n for title, n in fuzz.failed_checks.items() if title != "Server error")
    tracebacks = whole_log.count("Traceback")
    negative = [r for r in rows if r["kind"] == "negative"]
    negatives_not_4xx = sum(r["requests"] - r["4xx"] for r in negative)
    passed = not fuzz.problems and tracebacks == 0 and proc.returncode == 0
    print(table(rows, COLUMNS))
    print(f"{generated:,} generated requests (+{total - generated} probes) in {seconds:.0f} s "
          f"({1e3 * seconds / max(total, 1):.1f} ms each) on {machine()['cpu']}: 5xx {five_xx}, no answer "
          f"{unanswered}, schema violations {schema_violations} {dict(fuzz.failed_checks)}, negative requests "
          f"not answered 4xx {negatives_not_4xx}, tracebacks in the server log {tracebacks}, other log lines "
          f"{len(fuzz.noise)}, server exit status {proc.returncode}; {'PASS' if passed else 'FAIL'}")
    for problem in fuzz.problems[:5]:
        print("\n" + problem[:3000])
    write_json("api_fuzz", {
        "requests": total, "generated": generated, "probes": total - generated, "seed": args.seed,
        "checkpoint": args.checkpoint, "seconds": round(seconds, 1), "rows": rows, "five_xx": five_xx,
        "no_answer": unanswered, "schema_violations": schema_violations, "failed_checks": dict(fuzz.failed_checks),
        "negative_not_4xx": negatives_not_4xx, "tracebacks": tracebacks, "log_lines": len(fuzz.noise),
        "server_exit": proc.returncode, "problems": fuzz.problems[:20], "passed": passed,
        "versions": versions()})
    sys.exit(0 if passed else 1)


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("schemathesis", "hypothesis", "fastapi", "uvicorn", "starlette")}


if __name__ == "__main__":
    main()
