"""A short, seeded slice of the HTTP API fuzzing (bench/bench_api_fuzz.py sends 10,000 requests and more).

schemathesis generates requests from the /openapi.json of a real ``mnist-cnn serve`` process (the shipped
tutorial model): every answer is under 500 and declared in the schema, with its content type and body;
requests the schema forbids get a 4xx; the server's log holds no traceback and no line per bad request.
"""

from __future__ import annotations

import io
import sys
import warnings

import httpx
import pytest
from PIL import Image

from conftest import ROOT

from test_serve import running_server

sys.path.insert(0, str(ROOT / "tests" / "corpus"))

SLICE = {"positive": 250, "negative": 80, "mangled": 150}  # 2 cores: 7 s of requests, 12 s with both busy


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("api-fuzz") / "server.log"
    with running_server("tutorial", log) as (base, proc):
        yield base, log


@pytest.fixture(scope="module")
def fuzz(server, tmp_path_factory):
    pytest.importorskip("schemathesis")
    from api_fuzz import ApiFuzz

    return ApiFuzz(*server, save_dir=tmp_path_factory.mktemp("api-fuzz-requests"))


def test_the_schema_declares_every_answer(server):
    """The statuses the server sends, each with a JSON body; the fields every prediction has."""
    schema = httpx.get(server[0] + "/openapi.json", timeout=60).json()
    predict = schema["paths"]["/api/predict"]["post"]
    assert {"200", "400", "408", "413", "415", "422", "431"} <= set(predict["responses"])
    for path in schema["paths"].values():
        for operation in path.values():
            assert "431" in operation["responses"]  # a head too large is refused before any route
            for status, answer in operation["responses"].items():
                assert list(answer["content"]) == ["application/json"], status
    fields = schema["components"]["schemas"]["PredictResponse"]["properties"]
    assert {"verdict", "status", "reasons", "energy", "inputs_png", "timing_ms"} <= set(fields)
    bodies = predict["requestBody"]["content"]
    assert bodies["multipart/form-data"]["schema"]["properties"]["file"]["minLength"] == 1  # empty: 400
    assert {"image/*", "application/octet-stream"} <= set(bodies)  # raw bodies of any other type are read too


@pytest.mark.parametrize("kind", list(SLICE))
def test_generated_requests(fuzz, kind):
    sent = fuzz.run(kind, SLICE[kind])  # derandomized: the same requests every run
    fuzz.read_log()
    assert sent >= SLICE[kind] // 2, sent  # Hypothesis may stop early only when it runs out of new requests
    assert not fuzz.problems, "\n\n".join(fuzz.problems[:5])
    assert not fuzz.noise, fuzz.noise[:20]
    rows = {r["kind"]: r for r in fuzz.rows() if r["endpoint"] == "POST /api/predict"}
    if kind == "negative":
        assert rows["negative"]["requests"] > 0 and rows["negative"]["2xx"] == 0
    else:  # the slice reaches both the model and the refusals
        assert rows[kind]["2xx"] > 0 and rows[kind]["4xx"] > 0, rows[kind]


def warning_tiff() -> bytes:
    """A truncated TIFF that Pillow reads with a warning (corrupt EXIF data) or refuses."""
    buf = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buf, "TIFF")
    data = buf.getvalue()
    for cut in range(len(data) - 1, 0, -1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                Image.open(io.BytesIO(data[:cut])).load()
            except Exception:
                pass
        if caught:
            return data[:cut]
    pytest.skip("no truncation of the TIFF makes Pillow warn")


def test_bad_requests_write_nothing_to_the_log(server):
    """A malformed form (python-multipart logs it) and a damaged TIFF (Pillow warns): answered, not logged."""
    base, log = server
    start = log.stat().st_size
    form = {"content-type": "multipart/form-data; boundary=b"}
    with httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(2):
            r = http.post("/api/predict", content=b"--nope\r\n", headers=form)
            assert r.status_code == 400 and r.json()["detail"].startswith("malformed multipart form"), r.text
            r = http.post("/api/predict", content=warning_tiff(), headers={"content-type": "image/tiff"})
            assert r.status_code in (200, 415, 422), r.text
        assert http.get("/api/health").status_code == 200
    written = log.read_bytes()[start:].decode(errors="replace").splitlines()
    assert not [line for line in written if not line.startswith("INFO: ")], written
