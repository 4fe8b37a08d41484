#!/usr/bin/python3
"""Writes the libFuzzer seed corpus, tests/fuzz/corpus/<target>/: a few valid and a few invalid
inputs per target, all tiny (the fuzzers mutate them; large seeds only slow them down).

Usage: tests/fuzz/make_corpus.py   (needs python3-h5py for the version file; rerun after a format change)
"""
import gzip
import json
import os
import shutil
import struct
import zlib

import h5py
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def idx(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_corpus():
    images = idx([3, 4, 4], bytes(range(48)))
    labels = idx([3], bytes([0, 9, 4]))
    put("idx", "valid_images_3x4x4", images)
    put("idx", "valid_labels_3", labels)
    put("idx", "valid_images_3x4x4.gz", gzip.compress(images, mtime=0))
    put("idx", "bad_truncated", images[:-5])
    put("idx", "bad_trailing", labels + b"\x01")
    put("idx", "bad_type_float", bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"\0\0\0\0")
    put("idx", "bad_gzip_cut.gz", gzip.compress(images, mtime=0)[:-6])


def safetensors(entries, data, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    header.update(entries)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_corpus():
    w = np.arange(6, dtype=np.float32).tobytes()
    b = np.array([1, -2], dtype=np.int64).tobytes()
    put("safetensors", "valid_two", safetensors(
        {"b": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]},
         "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [16, 40]}}, b + w, {"format": "pt"}))
    put("safetensors", "valid_empty_and_scalar", safetensors(
        {"e": {"dtype": "F16", "shape": [0, 4], "data_offsets": [0, 0]},
         "s": {"dtype": "BOOL", "shape": [], "data_offsets": [0, 1]}}, b"\x01"))
    put("safetensors", "bad_gap", safetensors(
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
    put("safetensors", "bad_header_length", struct.pack("<Q", 1 << 40) + b"{}")
    put("safetensors", "bad_json", struct.pack("<Q", 8) + b'{"w":[1,')


def csv_corpus():
    put("predictions_csv", "valid_basic.csv", "id,label,pred\n0,1,1\n1,2,0\n2,0,0\n")
    put("predictions_csv", "valid_prob_task.csv", "task,id,label,pred,prob\n0,0,1,1,0.9\n0,1,2,0,0.25\n1,7,3,3,1\n")
    put("predictions_csv", "bad_fields.csv", "id,label,pred\n0,1\n")
    put("predictions_csv", "bad_number.csv", "id,label,pred\n0,1x,1\n1,-9223372036854775809,0\n")
    put("predictions_csv", "bad_duplicate_id.csv", "id,label,pred,prob\n3,1,1,0.5\n3,1,1,2.0\n")


def jsonl_corpus():
    put("predictions_jsonl", "valid_basic.jsonl",
        '{"id":0,"label":1,"pred":1}\n{"id":1,"label":2,"pred":0}\n')
    put("predictions_jsonl", "valid_prob_task.jsonl",
        '{"id":5,"label":1,"pred":1,"prob":0.75,"task":0}\n\n{"id":6,"label":0,"pred":2,"prob":0,"task":1}\n')
    put("predictions_jsonl", "bad_keys.jsonl", '{"id":0,"label":1,"pred":1}\n{"id":1,"label":2,"pred":0,"prob":1}\n')
    put("predictions_jsonl", "bad_json.jsonl", '{"id":0,"label":1,"pred":[1,{"a":\n')


def config_corpus():
    put("config", "valid_minimal.ini", "name = fuzz\nstream = split-fmnist\ntasks = 5\nmethod = naive\n")
    put("config", "valid_method_section.ini",
        "# a comment\nname = c\nstream = permuted-fmnist\ntasks = 3\nmodel = mlp\nhidden = 32,16\n"
        "method = coso\nlr = 0.05\nbatch-size = 16\nepochs = 1\n\n[coso]\nr1 = 4\n")
    put("config", "valid_vit.ini", "model = vit\npatch = 7\ndim = 16\ndepth = 1\nheads = 2\nmlp-dim = 32\n"
        "class-order = 9,8,7,6,5,4,3,2,1,0\ncompat = distill\ncompat-alpha = 0.5\n")
    put("config", "bad_value.ini", "tasks = -3\nlr = abc\n")
    put("config", "bad_unknown.ini", "no-such-option = 1\n[nosuchmethod]\nx = 1\n")
    put("config", "bad_syntax.ini", "[coso\nr1 4\n")


USER_BLOCK = 512


def user_block(magic, rest):
    """The 512-byte user block core::write_user_block puts before the HDF5 bytes `rest`."""
    h = "%s\nsize=%d\ncrc32=%08x\n" % (magic, USER_BLOCK + len(rest), zlib.crc32(rest))
    h += "header_crc32=%08x\n" % zlib.crc32(h.encode())
    return h.encode().ljust(USER_BLOCK, b"\0")


def version_corpus():
    """A tiny but complete version file, as checkpoints::write_version lays it out (checksum and user
    block included), the same file without the user block (as written before it existed), and damaged
    copies of both."""
    data = {
        "/model/fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "/model/fc.bias": np.zeros(2, dtype=np.float32),
        "/method/tensors/basis/fc": np.eye(2, dtype=np.float32),
        "/rng/torch_cpu": np.arange(16, dtype=np.uint8),
        "/position/accuracy_matrix": np.array([[0.5, 0.0], [0.0, 0.0]]),
        "/position/initial_accuracy": np.array([0.1, 0.1]),
        "/position/timings": np.array([[0, 1.5, 0.25, 100.0, 10]], dtype=np.float64),
    }
    crc = 0
    for p in sorted(data):
        crc = zlib.crc32(np.ascontiguousarray(data[p]).tobytes(), crc)
    path = os.path.join(ROOT, "version", "valid_v000.h5")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w", libver="latest", userblock_size=USER_BLOCK) as f:
        for p, a in data.items():
            f.create_dataset(p, data=a)
        f.create_group("optimizer")
        for k, v in {"format": "strata-version", "method": "gpm", "config_ini": "name = fuzz\n",
                     "torch_version": "1.13.0", "created": "2026-01-01T00:00:00Z"}.items():
            f.attrs[k] = v
        f.attrs["format_version"] = np.int64(1)
        f.attrs["version"] = np.int64(0)
        f.attrs["checksum_crc32"] = np.int64(crc)
        f["method"].attrs["name"] = "gpm"
        f["method"].attrs["meta_json"] = '{"threshold":0.97}'
        f["position"].attrs["next_task"] = np.int64(1)
        f["position"].attrs["num_tasks"] = np.int64(2)
        for n in ("fc.weight", "fc.bias"):
            f["model"][n].attrs["kind"] = "parameter"
            f["model"][n].attrs["requires_grad"] = np.int64(1)
    with open(path, "rb") as f:
        hdf5 = f.read()[USER_BLOCK:]
    good = user_block("strata-version-userblock", hdf5) + hdf5
    put("version", "valid_v000.h5", good)
    # HDF5 addresses are relative to the superblock: without the block it is an older, valid file.
    put("version", "valid_legacy_v000.h5", hdf5)
    # Damaged copies: cut short, one flipped byte in the middle of the data, one in the header.
    put("version", "bad_truncated.h5", good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) * 3 // 4] ^= 0xFF
    put("version", "bad_flipped.h5", bytes(flipped))
    header = bytearray(good)
    header[30] ^= 0x01
    put("version", "bad_header.h5", bytes(header))
    legacy = bytearray(hdf5)
    legacy[len(hdf5) * 3 // 4] ^= 0xFF
    put("version", "bad_legacy_flipped.h5", bytes(legacy))
    put("version", "bad_not_hdf5.h5", b"\x89HDF\r\n\x1a\n" + bytes(40))


if __name__ == "__main__":
    shutil.rmtree(ROOT, ignore_errors=True)
    idx_corpus()
    safetensors_corpus()
    csv_corpus()
    jsonl_corpus()
    config_corpus()
    version_corpus()
