"""The hostile-input corpus (tests/corpus/make_corpus.py) through every reader a user meets: ``predict`` (CLI),
``evaluate --data`` and ``POST /api/predict`` on a real server process. Each input gets a one-line error, a
prediction or "no digit found": never a traceback, never a 5xx, and the server's memory stays bounded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "tests" / "corpus"))
from make_corpus import SPECIAL, make_corpus  # noqa: E402
from test_serve import running_server  # noqa: E402

SERVER_PEAK_MB = 1024  # the server's peak RSS over the whole corpus, bombs included


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_corpus(folder)


def test_the_corpus_has_forty_kinds_or_more(corpus):
    assert len(corpus[1]) >= 40


def test_predict_cli(trained_run, corpus):
    folder, expected = corpus
    r = run_cli("predict", "--checkpoint", str(trained_run), "--json", "--no-progress",
                *[str(folder / name) for name in expected], timeout=600)
    assert "Traceback" not in r.stderr, r.stderr
    results = {Path(d["source"]).name: d for d in map(json.loads, r.stdout.splitlines())}
    assert set(results) == set(expected)
    for name, want in expected.items():
        got = "error" if "error" in results[name] else "digit"
        assert want in ("any", got), (name, results[name])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: /")]
    assert len(errors) == sum("error" in d for d in results.values())  # one line each


def test_evaluate_data(trained_run, tmp_path):
    """The whole corpus as labelled images of a 7: the bad ones are skipped with a warning each."""
    expected = make_corpus(tmp_path / "digits" / "7")
    r = run_cli("evaluate", "--checkpoint", str(trained_run), "--data", str(tmp_path / "digits"),
                "--out", str(tmp_path / "report"), timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    skipped = [line for line in r.stderr.splitlines() if line.startswith("warning: skipped /")]
    assert len(skipped) >= sum(want == "error" and Path(n).suffix in (".png", ".jpg", ".tif")
                               for n, want in expected.items())
    assert "accuracy" in r.stdout


def test_http_api(trained_run, corpus, tmp_path):
    folder, expected = corpus
    statuses = {}
    # --workers 1: the process measured below is the one that decodes every image
    with running_server(trained_run, tmp_path / "server.log", "--workers", "1") as (base, proc), \
            httpx.Client(base_url=base) as http:
        for name in expected:
            if name in SPECIAL:
                continue
            data = (folder / name).read_bytes()
            r = http.post("/api/predict", files={"file": (name, data, "application/octet-stream")}, timeout=120)
            statuses[name] = r.status_code
            assert r.status_code < 500, (name, r.text)
            assert r.status_code == 200 or r.json()["detail"], (name, r.text)
            want = expected[name]
            assert want == "any" or (want == "digit") == (r.status_code == 200), (name, r.status_code, r.text)
        assert http.get("/api/health").status_code == 200
        peak_mb = peak_rss_mb(proc.pid)
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log
    assert peak_mb < SERVER_PEAK_MB, peak_mb


def peak_rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0
