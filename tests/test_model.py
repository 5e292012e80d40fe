"""The tutorial CNN: exact parameter counts, summary table, logits out."""

import torch

from mnist_cnn.model import MODELS, build_model, count_parameters, summary


def test_tutorial_parameter_counts():
    model = build_model("tutorial")
    assert count_parameters(model) == 93_322
    per_layer = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    assert [c for c in per_layer.values() if c] == [320, 18_496, 36_928, 36_928, 650]


def test_summary_matches_the_tutorial():
    text = summary(build_model())
    for expected in ("(None, 32, 26, 26)", "(None, 64, 3, 3)", "(None, 576)", "18,496", "36,928",
                     "Total params: 93,322"):
        assert expected in text


def test_model_returns_logits_for_a_batch():
    torch.manual_seed(0)
    out = build_model()(torch.rand(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert not torch.allclose(out.sum(1), torch.ones(7))  # not softmax-ed: softmax is at the edges


def test_every_registered_model_builds():
    for name in MODELS:
        assert build_model(name)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
