"""The command line as a user meets it: help for every command, one-line errors, right predictions."""

import pytest

from conftest import SAMPLES, run_cli
from mnist_cnn.cli import COMMANDS, build_parser


def test_help_lists_every_command():
    out = run_cli("--help").stdout
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name):
    result = run_cli(name, "--help")
    assert result.returncode == 0 and "usage: mnist-cnn " + name in result.stdout


def test_train_flags_show_their_defaults():
    help_text = build_parser().parse_args  # the parser builds without error
    out = run_cli("train", "--help").stdout
    for flag in ("--epochs", "--batch-size", "--lr", "--seed", "--run-dir", "--save-every", "--keep",
                 "--resume", "--limit", "--device", "--data"):
        assert flag in out
    assert "(default: " in out and help_text


def test_summary_prints_the_tutorial_table():
    out = run_cli("summary").stdout
    assert "Total params: 93,322" in out and "(None, 576)" in out


def test_samples_are_predicted_right(trained_run):
    images = sorted(SAMPLES.glob("*.png"))
    assert len(images) >= 10
    result = run_cli("predict", "--checkpoint", str(trained_run), "--json", *map(str, images))
    assert result.returncode == 0, result.stderr
    import json

    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["number"] for r in rows] == [p.name[0] for p in images]


@pytest.mark.parametrize("args, message", [
    (["predict", "--checkpoint", "/no/such/run", "x.png"], "no model at /no/such/run"),
    (["train", "--data", "/no/such/folder", "--epochs", "1"], "data not found"),
    (["train", "--resume", "/no/such.pt", "--run-dir", "/tmp/mnist-cnn-test-unused"], "checkpoint not found"),
    (["train", "--device", "cuda", "--run-dir", "/tmp/mnist-cnn-test-unused"], "CUDA"),
    (["summary", "--model", "nope"], "unknown model"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_predict_goes_on_past_a_bad_file(trained_run, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    good = sorted(SAMPLES.glob("*.png"))[0]
    result = run_cli("predict", "--checkpoint", str(trained_run), str(tmp_path / "notes.txt"),
                     str(tmp_path / "missing.png"), str(good))
    assert result.returncode != 0
    assert "predicted digit: " + good.name[0] in result.stdout
    assert "notes.txt" in result.stderr and "missing.png" in result.stderr and "Traceback" not in result.stderr
