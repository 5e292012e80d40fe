"""--precision auto decides by timing real steps on this machine, once, and says why."""

import json

import pytest
import torch

from mnist_cnn import precision

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "mnist-cnn" / "precision.json"


def test_an_explicit_precision_is_not_measured(cache):
    assert precision.choose(CPU, "tutorial", 64, "fp32") == (False, "fp32 (asked for)")
    assert precision.choose(CPU, "tutorial", 64, "bf16") == (True, "bf16 (asked for)")
    assert not cache.exists()


@pytest.mark.skipif(not precision.native_bf16(CPU), reason="this CPU has no native bf16: auto is fp32 unmeasured")
def test_auto_measures_once_then_follows_the_cached_timings(cache):
    bf16, why = precision.choose(CPU, "tutorial", 32, "auto")
    assert "measured now" in why
    (key, ms), = json.loads(cache.read_text()).items()
    assert "tutorial" in key and "batch 32" in key and ms["fp32"] > 0 and ms["bf16"] > 0
    assert bf16 == (ms["bf16"] < precision.MIN_GAIN * ms["fp32"])
    # The verdict comes from the timings, whatever the CPU's flags say: a machine where bf16 is slower
    cache.write_text(json.dumps({key: {"fp32": 10.0, "bf16": 12.0}}))
    assert precision.choose(CPU, "tutorial", 32, "auto") == (
        False, f"fp32 (auto: a step takes 12.0 ms in bf16, 10.0 ms in fp32 here; measured before, cached in {cache})")
    cache.write_text(json.dumps({key: {"fp32": 10.0, "bf16": 6.0}}))
    assert precision.choose(CPU, "tutorial", 32, "auto")[0] is True


def test_the_run_records_its_precision_and_why(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["precision_used"] in ("fp32", "bf16") and config["precision_why"].startswith(config["precision_used"])
