"""Fuzzing the HTTP API against its OpenAPI schema with schemathesis: the requests, the checks and the tallies.

Used by tests/test_api_fuzz.py (a short seeded slice) and bench/bench_api_fuzz.py (10,000 requests and more),
both against a real ``mnist-cnn serve`` process started by tests/test_serve.py's ``running_server``. The schema
is the server's own /openapi.json. Three kinds of request:

- positive: what the schema allows. Image bodies (raw, or the multipart ``file``) come from fuzz_inputs.py
  (damaged images, random pictures, random bytes) and the samples; schemathesis adds its own files and bytes.
- negative: what the schema forbids (schemathesis's negative mode: a form without its file, an empty file …).
  Where a body cannot be negated (any bytes are a raw image body), schemathesis sends a positive one instead:
  it is checked and counted as positive.
- mangled: a valid multipart request whose bytes or Content-Type were then edited (the envelope broken).

Every answer must be under 500 and declared in the schema with its content type and body (schemathesis's
checks); a positive request may only be refused for its image (413, 415, 422: what no schema can describe), a
negative one must get a 4xx; and the server's log must hold no traceback, nor any line a bad request wrote.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               positive_data_acceptance, response_schema_conformance,
                                               status_code_conformance)

from fuzz_inputs import inputs as image_inputs

# uvicorn's and gunicorn's INFO lines ("INFO: …", "[date] [pid] [INFO] …"): with several workers, one may log
# its "Application startup complete" after another already answers, so such a line can land in the fuzzing
INFO_LINE = re.compile(r"^(INFO: |\[[^]]*\] \[\d+\] \[INFO\] )")

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT_S = 120  # per request: generous, the machine may be busy
CONFIG = {"checks": {  # what each check accepts; the schemathesis defaults leave out 413/415 and 4xx at large
    "positive_data_acceptance": {"expected-statuses": ["2xx", 413, 415, 422]},
    "negative_data_rejection": {"expected-statuses": ["4xx"]},
}}
SCHEMA_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS = {"positive": SCHEMA_CHECKS + [positive_data_acceptance],
          "negative": SCHEMA_CHECKS + [negative_data_rejection],
          "mangled": SCHEMA_CHECKS, "probe": SCHEMA_CHECKS}
PROBE_EVERY = 100  # requests between two probes (GET /api/health and /api/model: is the server still well?)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff", "image/bmp")
BOUNDARY = "f" * 32  # mangled requests get this boundary instead of a random one, so that a seed replays them


def image_bodies() -> st.SearchStrategy[bytes]:
    samples = [p.read_bytes() for p in sorted((ROOT / "samples").glob("*.png"))]
    return st.one_of(st.sampled_from(samples), image_inputs.filter(len))  # the schema's minLength: 1


def register_image_bodies() -> None:
    """Image bodies for the schema's ``image/*`` (raw bodies and, through its encoding, the form's file)."""
    schemathesis.openapi.media_type(IMAGE_TYPES[0], image_bodies(), aliases=IMAGE_TYPES[1:])


@st.composite
def mangling(draw) -> tuple[list, int | None, str | None]:
    """Edits for a multipart request: byte edits (position as a fraction of the body), a truncation, and maybe
    another Content-Type (no boundary, a wrong one, a quoted one, a bad charset)."""
    pieces = st.one_of(st.sampled_from([b"\r\n", b"--", b"\r\n\r\n", b'"', b";", b"--" + BOUNDARY.encode()]),
                       st.binary(max_size=8))
    edits = draw(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 8), pieces), max_size=4))
    cut = draw(st.one_of(st.none(), st.integers(0, 400)))
    ctype = draw(st.sampled_from([None] * 4 + [
        "multipart/form-data", f"multipart/form-data; boundary={BOUNDARY[:-1]}",
        f'multipart/form-data; boundary="{BOUNDARY}"', f"multipart/form-data; boundary={BOUNDARY}; charset=nope",
        f"multipart/mixed; boundary={BOUNDARY}", "multipart/form-data; boundary="]))
    return edits, cut, ctype


class ApiFuzz:
    """Sends generated requests to a running server, checks each answer and tallies them.

    ``tally[(endpoint, kind)]`` counts answers by status; ``problems`` lists every failed check (with a curl
    command that replays the request) and every traceback in the server's log; ``noise`` holds the other lines
    the server logged while fuzzed (uvicorn's INFO lines aside): a bad request should not write any. The bodies
    of the last two requests before a traceback are written to ``save_dir`` (its culprit is one of them).
    """

    def __init__(self, base: str, log_path: Path, save_dir: Path | None = None):
        register_image_bodies()
        self.base, self.log_path, self.save_dir = base, Path(log_path), save_dir
        self.recent: collections.deque = collections.deque(maxlen=2)  # the requests last sent
        self.log_read = self.log_path.stat().st_size  # what the server logged before (its start) is not ours
        self.schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=TIMEOUT_S,
                                                    config=schemathesis.Config.from_dict(CONFIG))
        self.http = requests.Session()
        self.tally: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
        self.problems: list[str] = []
        self.failed_checks: collections.Counter = collections.Counter()  # by schemathesis's title
        self.noise: list[str] = []
        self.tracebacks = 0

    def strategy(self, kind: str) -> st.SearchStrategy:
        if kind == "mangled":
            forms = self.schema.as_strategy().filter(lambda case: case.media_type == "multipart/form-data")
            return st.tuples(forms, mangling())
        cases = self.schema.as_strategy(generation_mode=GenerationMode(kind))
        return cases.filter(refusable) if kind == "negative" else cases

    def run(self, kind: str, examples: int, *, seed: int | None = None) -> int:
        """``examples`` generated requests of one kind (fewer if Hypothesis runs out of distinct ones);
        ``seed`` None: derandomized (the same requests every time). Returns the number sent."""
        sent = 0

        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(self.strategy(kind))
        def one(drawn) -> None:
            nonlocal sent
            self.send(kind, drawn)
            sent += 1
            if sent % PROBE_EVERY == 0:
                for path in ("/api/health", "/api/model"):
                    self.send("probe", self.schema[path]["GET"].Case())

        (one if seed is None else hypothesis_seed(seed)(one))()
        return sent

    def send(self, kind: str, drawn) -> None:
        if kind == "mangled":
            case, (edits, cut, ctype) = drawn
            request = mangled_request(case, self.base, edits, cut, ctype)
        else:
            case, request = drawn, None
            if kind != "probe":  # negative falls back to positive where a body cannot be negated
                kind = case.meta.generation.mode.value
        endpoint = f"{case.method} {case.path}"
        try:
            if request is None:
                response = case.call(base_url=self.base, session=self.http, timeout=TIMEOUT_S)
            else:
                response = self.http.send(request, timeout=TIMEOUT_S)
        except requests.RequestException as e:
            self.recent.append(request or e.request)
            self.tally[(endpoint, kind)]["no answer"] += 1
            self.problems.append(f"{kind} {endpoint}: no answer ({type(e).__name__}: {e})")
            return
        self.recent.append(response.request)
        self.tally[(endpoint, kind)][response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS[kind])
        except FailureGroup as e:  # the failed checks, with a curl command that replays the request
            self.failed_checks.update(failure.title for failure in e.exceptions)
            self.problems.append(f"{kind} {endpoint} -> {response.status_code}: {e}"
                                 + (f"\n(mangled: {drawn[1]!r})" if request is not None else ""))
        self.read_log(f"{kind} {endpoint} -> {response.status_code}")

    def read_log(self, after: str = "the run") -> None:
        """Counts the tracebacks the server logged since the last call (a traceback is logged by the time
        its response is sent, or just after: it may be blamed on the next request, never lost)."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_read)
            text = f.read()
        cut = text.rfind(b"\n") + 1  # only whole lines: the rest is read next time
        text, self.log_read = text[:cut].decode("utf-8", "replace"), self.log_read + cut
        if found := text.count("Traceback"):
            self.tracebacks += found
            self.problems.append(f"traceback in the server log after {after}:\n{text[-3000:]}\n"
                                 f"the requests before it: {self.save_recent()}")
        self.noise += [line for line in text.splitlines() if not INFO_LINE.match(line)]

    def save_recent(self) -> list[str]:
        """The last requests sent: method, URL, Content-Type and where their body was saved."""
        out = []
        for request in self.recent:
            if request is None:
                continue
            body = request.body or b""
            body = body.encode() if isinstance(body, str) else body
            where = "not saved"
            if self.save_dir is not None:
                Path(self.save_dir).mkdir(parents=True, exist_ok=True)
                where = Path(self.save_dir) / f"request-{self.tracebacks}-{len(out)}.body"
                where.write_bytes(body)
            out.append(f"{request.method} {request.url} {request.headers.get('Content-Type')!r} "
                       f"{len(body)} bytes: {where}")
        return out

    def rows(self) -> list[dict]:
        """One row per endpoint and kind: requests, answers by status class, the statuses seen."""
        out = []
        for (endpoint, kind), counts in sorted(self.tally.items()):
            classes = collections.Counter(f"{s // 100}xx" if isinstance(s, int) else s for s in counts.elements())
            out.append({"endpoint": endpoint, "kind": kind, "requests": sum(counts.values()),
                        **{c: classes.get(c, 0) for c in ("2xx", "4xx", "5xx", "no answer")},
                        "statuses": " ".join(f"{s}:{n}" for s, n in sorted(counts.items(), key=str))})
        return out


def refusable(case) -> bool:
    """Whether a negative case breaks what the server checks. Not so a form whose ``file`` is a file with bytes:
    its other fields, where the schema was broken, are ignored by design (the schema's additionalProperties), and
    a form field is text on the wire whatever type the schema was negated to."""
    if not isinstance(case.body, dict):
        return True
    file = case.body.get("file")
    data = file if isinstance(file, bytes) else getattr(file, "data", None)  # schemathesis's Binary holds bytes
    return not (isinstance(data, bytes) and data)


def mangled_request(case, base: str, edits: list, cut: int | None, ctype: str | None) -> requests.PreparedRequest:
    """The case's request as requests would send it, with the multipart boundary fixed and ``edits`` applied."""
    kwargs = case.as_transport_kwargs(base_url=base)
    request = requests.Request(**{k: kwargs[k] for k in ("method", "url", "headers", "files", "data")
                                  if kwargs.get(k) is not None}).prepare()
    old = re.search(r"boundary=(\S+)", request.headers["Content-Type"]).group(1)
    body = bytearray(request.body.replace(old.encode(), BOUNDARY.encode()))
    for where, length, piece in edits:
        at = int(where * len(body))
        body[at:at + length] = piece
    if cut is not None:
        body = body[:cut]
    request.headers["Content-Type"] = ctype or f"multipart/form-data; boundary={BOUNDARY}"
    del request.headers["Content-Length"]
    request.prepare_body(bytes(body), None)  # sets Content-Length again, the body's
    return request
