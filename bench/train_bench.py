#!/usr/bin/env python3
"""Plain PyTorch reference loop for bench/train_bench.cpp: the same naive training loop
(GPM-protocol MLP 784-100-100-10 without bias, SGD, cross-entropy) on the same Fashion-MNIST
training images, same threads and batch size. Prints one line per batch size:
  python batch=B examples=N seconds=S examples_per_s=R
"""
import argparse
import gzip
import time

import numpy as np
import torch


def load_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, h, w = int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, h * w)


def load_labels(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="10,256")
    ap.add_argument("--examples", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x = torch.from_numpy(load_images(a.data_dir + "/train-images-idx3-ubyte.gz").copy()).float().div_(255)
    x = ((x - 0.2860) / 0.3530)[: a.examples].contiguous()
    y = torch.from_numpy(load_labels(a.data_dir + "/train-labels-idx1-ubyte.gz"))[: a.examples].contiguous()
    for bs in [int(b) for b in a.batches.split(",")]:
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 100, bias=False), torch.nn.ReLU(),
            torch.nn.Linear(100, 100, bias=False), torch.nn.ReLU(),
            torch.nn.Linear(100, 10, bias=False))
        opt = torch.optim.SGD(model.parameters(), lr=a.lr)
        n = x.shape[0]
        # one warm-up pass over 50 batches, then the timed epoch
        perm = torch.randperm(n)
        for s in range(0, min(n, 50 * bs), bs):
            idx = perm[s:s + bs]
            loss = torch.nn.functional.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        correct = 0
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            logits = model(xb)
            loss = torch.nn.functional.cross_entropy(logits, yb)
            if not np.isfinite(loss.item()):  # the C++ loop checks every loss too
                raise SystemExit("non-finite loss")
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += (logits.detach().argmax(1) == yb).sum()
        dt = time.perf_counter() - t0
        print(f"python batch={bs} examples={n} seconds={dt:.4f} examples_per_s={n / dt:.1f}", flush=True)


if __name__ == "__main__":
    main()
