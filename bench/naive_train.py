"""The tutorial's recipe as a naive PyTorch loop: the baseline for bench_train.py.

DataLoader over a TensorDataset (shuffle, batch 32), Adam 1e-3 constant, 5 epochs, contiguous fp32, the same
93,322-parameter model. Run: python bench/naive_train.py [--epochs 5] [--limit N]
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from mnist_cnn.data import load_mnist
from mnist_cnn.model import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    x, y = load_mnist("train", args.limit)
    xt, yt = load_mnist("test")
    train = TensorDataset(torch.from_numpy(x.copy()).float().div(255).unsqueeze(1), torch.from_numpy(y))
    loader = DataLoader(train, batch_size=32, shuffle=True)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    epochs = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(xt.copy()).float().div(255).unsqueeze(1)).argmax(1)
        acc = (pred == torch.from_numpy(yt)).float().mean().item()
        epochs.append({"seconds": time.perf_counter() - t, "test_acc": acc})
    print(json.dumps({"epochs": epochs, "test_acc": epochs[-1]["test_acc"]}))


if __name__ == "__main__":
    main()
