#!/usr/bin/env python3
"""Plain PyTorch reference for the GPM protocol (bench/gpm_bench.cpp runs it beside Strata's):
permuted Fashion-MNIST, MLP 784-100-100-10 without bias, SGD, batch 10, GPM on every Linear layer
(thresholds 0.95/0.99/0.99, 300 samples, plain rule on task 1, residual rule afterwards), gradient
projected the usual way, G <- G - (G M) M^T, after every backward.

The stream is built like Strata's (same splitmix64-seeded permutations, train/validation subsets,
normalisation and per-epoch shuffles), so both loops see the same data in the same order; the
model is evaluated on every task's test set before training and after each task, and on the
current task's validation split after each epoch, as Strata's Runner does. Prints one line:
  python gpm tasks=T epochs=E examples=N seconds=S acc=A steps=K
"""
import argparse
import gzip
import math
import time

import numpy as np
import torch

M64 = (1 << 64) - 1
MEAN, STD = 0.2860, 0.3530


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def gen(seed):
    g = torch.Generator()
    g.manual_seed(seed if seed < (1 << 63) else seed - (1 << 64))
    return g


def stream_gen(seed, task, purpose):  # tasks/streams.cpp make_gen
    s = splitmix64(seed & M64)
    s = splitmix64(s ^ task)
    s = splitmix64(s ^ purpose)
    return gen(s)


def shuffle_gen(seed, task, epoch):  # continual/trainer.cpp shuffle_generator
    h = (seed * 0x9E3779B97F4A7C15) & M64
    h ^= ((task + 1) * 0xBF58476D1CE4E5B9) & M64
    h ^= ((epoch + 1) * 0x94D049BB133111EB) & M64
    return gen(h)


def load_idx(path, offset):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def make_stream(a):
    tr = torch.from_numpy(load_idx(a.data_dir + "/train-images-idx3-ubyte.gz", 16).copy()).view(-1, 784)
    te = torch.from_numpy(load_idx(a.data_dir + "/t10k-images-idx3-ubyte.gz", 16).copy()).view(-1, 784)
    ytr = torch.from_numpy(load_idx(a.data_dir + "/train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    yte = torch.from_numpy(load_idx(a.data_dir + "/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    lut = (torch.arange(256, dtype=torch.float32) / 255 - MEAN) / STD
    tasks = []
    for t in range(a.tasks):
        perm = torch.arange(784) if t == 0 else torch.randperm(784, generator=stream_gen(a.seed, t, 1))
        n_pool = tr.shape[0]
        n = min(a.train_limit, n_pool) if a.train_limit > 0 else n_pool
        n_val = int(math.floor(a.val_fraction * n))
        p = torch.randperm(n_pool, generator=stream_gen(a.seed, t, 2))
        val_idx, train_idx = p[:n_val].sort().values, p[n_val:n].sort().values
        split = lambda src, y, idx: (lut[src.index_select(0, idx).long()][:, perm].contiguous(), y.index_select(0, idx))
        tasks.append({"train": split(tr, ytr, train_idx), "val": split(tr, ytr, val_idx),
                      "test": split(te, yte, torch.arange(te.shape[0]))})
    return tasks


def accuracy(model, x, y, bs=1000):
    with torch.no_grad():
        correct = 0
        for s in range(0, x.shape[0], bs):
            correct += (model(x[s:s + bs]).argmax(1) == y[s:s + bs]).sum().item()
    return correct / max(1, x.shape[0])


def energy_rank(s, eps):
    e = s.double().square()
    tot = e.sum().item()
    return 0 if tot <= 0 else int(((e.cumsum(0) / tot) < eps).sum().item())


def update_memory(memory, R, eps):
    """GPM's memory update for one layer, R [n, samples]."""
    if memory is None:
        U, S, _ = torch.linalg.svd(R, full_matrices=False)
        k = energy_rank(S, eps)
        return U[:, :k].contiguous()
    total = R.double().square().sum().item()
    Rh = R - memory @ (memory.t() @ R)
    U, S, _ = torch.linalg.svd(Rh, full_matrices=False)
    e = S.double().square()
    acc, k = (total - e.sum().item()) / total, 0
    while k < e.numel() and acc < eps:
        acc += e[k].item() / total
        k += 1
    if k == 0:
        return memory
    V = U[:, :k]
    V = V - memory @ (memory.t() @ V)
    Q, Rq = torch.linalg.qr(V)
    Q = Q[:, Rq.diagonal().abs() > 1e-6 * max(V.norm(dim=0).max().item(), 1e-30)]
    Q = Q - memory @ (memory.t() @ Q)
    Q = torch.linalg.qr(Q)[0]
    return torch.cat([memory, Q], 1)[:, : R.shape[0]].contiguous()


def run(a):
    torch.set_num_threads(a.threads)
    tasks = make_stream(a)
    torch.manual_seed(a.seed)
    layers = [torch.nn.Linear(784, 100, bias=False), torch.nn.Linear(100, 100, bias=False),
              torch.nn.Linear(100, 10, bias=False)]
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    memory = [None] * 3
    thresholds = [0.95, 0.99, 0.99]
    t0 = time.perf_counter()
    [accuracy(model, *tasks[t]["test"]) for t in range(a.tasks)]  # b (initial accuracy)
    steps, final = 0, []
    for t in range(a.tasks):
        x, y = tasks[t]["train"]
        n = x.shape[0]
        opt = torch.optim.SGD(model.parameters(), lr=a.lr)
        model.train()
        for epoch in range(a.epochs):
            perm = torch.randperm(n, generator=shuffle_gen(a.seed, t, epoch))
            for s in range(0, n, a.batch_size):
                idx = perm[s:s + a.batch_size]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                if not math.isfinite(loss.item()):
                    raise SystemExit("non-finite loss")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for l, M in zip(layers, memory):
                    if M is not None:
                        g = l.weight.grad
                        g.sub_((g @ M) @ M.t())
                opt.step()
                steps += 1
            if tasks[t]["val"][0].shape[0] > 0:
                accuracy(model, *tasks[t]["val"])
        # memory update on 300 seeded samples (continual/gpm.cpp's draw)
        g = gen((a.seed * 1000003 + t + 17) & M64)
        idx = torch.randperm(n, generator=g)[: min(300, n)]
        model.eval()
        with torch.no_grad():
            h = x.index_select(0, idx)
            for j, l in enumerate(layers):
                R = h.t().contiguous()
                eps = min(1.0, thresholds[min(j, 2)])
                memory[j] = update_memory(memory[j], R, eps)
                h = l(h)
                if j < 2:
                    h = torch.relu(h)
        final = [accuracy(model, *tasks[j]["test"]) for j in range(a.tasks)]
    dt = time.perf_counter() - t0
    acc = sum(final) / len(final)
    print(f"python gpm tasks={a.tasks} epochs={a.epochs} examples={tasks[0]['train'][0].shape[0]} seconds={dt:.3f} "
          f"acc={acc * 100:.2f} steps={steps} ranks={[0 if M is None else M.shape[1] for M in memory]}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
