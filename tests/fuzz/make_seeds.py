#!/usr/bin/python3
"""Regenerate the loader seed corpora under tests/fuzz/ (small valid and near-valid files).
Run from the repository root: /usr/bin/python3 tests/fuzz/make_seeds.py (needs numpy).
The checkpoint seeds come from the harness itself:
  CG_FUZZ_WRITE_SEED=tests/fuzz/checkpoint/stepN.list CG_FUZZ_SEED_STEPS=N build/fuzz/fuzz_checkpoint"""
import gzip, io, os, struct, zipfile
import numpy as np

D = "tests/fuzz"
def put(sub, name, data):
    os.makedirs(f"{D}/{sub}", exist_ok=True)
    with open(f"{D}/{sub}/{name}", "wb") as f:
        f.write(data)

def npy(a, **kw):
    b = io.BytesIO()
    np.lib.format.write_array(b, a, **kw)
    return b.getvalue()

r = np.random.default_rng(1)
arrays = {
    "f4_2x3": r.standard_normal((2, 3)).astype("<f4"),
    "f8_scalar": np.array(3.5, "<f8"),
    "i8_4": np.arange(4, dtype="<i8"),
    "i4_2x2": np.array([[1, -2], [3, 4]], "<i4"),
    "u1_3x2x2": np.arange(12, dtype="u1").reshape(3, 2, 2),
    "i1_5": np.array([-1, 0, 1, 2, -128], "i1"),
    "f4_empty": np.zeros((0, 3), "<f4"),
    "f4_rank4": r.standard_normal((1, 1, 2, 2)).astype("<f4"),
    "f4_big_endian": np.arange(3, dtype=">f4"),
    "f4_fortran": np.asfortranarray(r.standard_normal((2, 3)).astype("<f4")),
    "bool_2": np.array([True, False]),
}
for k, a in arrays.items():
    put("npy", k + ".npy", npy(a))
put("npy", "f4_v2.npy", npy(arrays["f4_2x3"], version=(2, 0)))

def npz(members):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        for k, a in members.items():
            z.writestr(k + ".npy", npy(a))
    return b.getvalue()

def member_list(members):
    return b"@@member@@".join(k.encode() + b".npy\n" + npy(a) for k, a in members.items())

weights = {  # tests/nets/t_train_bn.yaml
    "0.weight": r.standard_normal((3, 1, 3, 3)).astype("f4"),
    "1.weight": np.ones(3, "f4"), "1.bias": np.zeros(3, "f4"),
    "1.running_mean": np.zeros(3, "f4"), "1.running_var": np.ones(3, "f4"),
    "1.num_batches_tracked": np.array(7, "i8"),
    "5.weight": r.standard_normal((4, 12)).astype("f4"), "5.bias": np.zeros(4, "f4"),
}
dataset = {"x": r.random((5, 1, 6, 6)).astype("f4"), "y": np.array([0, 1, 2, 3, 1], "i8")}
regress = {"x": r.random((3, 4)).astype("f8"), "y": r.random((3, 2)).astype("f4")}
norm = {"mean": np.array([0.5], "f4"), "std": np.array([0.25], "f4")}
for name, m in [("weights", weights), ("dataset", dataset), ("regression", regress), ("normalize", norm)]:
    put("npz", name + ".zip", b"1" + npz(m))
    put("npz", name + ".list", b"L" + member_list(m))
b = io.BytesIO()
with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("x.npy", npy(dataset["x"])); z.writestr("y.npy", npy(dataset["y"]))
put("npz", "dataset_deflated.zip", b"1" + b.getvalue())
put("npz", "empty.zip", b"1PK\x05\x06" + b"\0" * 18)

def idx(a, code):
    hdr = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return hdr + a.astype(a.dtype.newbyteorder(">")).tobytes()
put("idx", "u8_images.idx", idx(np.arange(2 * 3 * 3, dtype="u1").reshape(2, 3, 3), 0x08))
put("idx", "u8_labels.idx", idx(np.array([1, 0, 9], "u1"), 0x08))
put("idx", "i8_2x2.idx", idx(np.array([[-1, 2], [3, -4]], "i1"), 0x09))
put("idx", "i16_3.idx", idx(np.array([-300, 0, 300], "i2"), 0x0B))
put("idx", "i32_2.idx", idx(np.array([-70000, 5], "i4"), 0x0C))
put("idx", "f32_2x2.idx", idx(np.array([[0.5, -1], [2, 3]], "f4"), 0x0D))
put("idx", "f64_rank4.idx", idx(np.ones((1, 2, 1, 2), "f8"), 0x0E))
put("idx", "u8_images.idx.gz", gzip.compress(idx(np.arange(2 * 4 * 4, dtype="u1").reshape(2, 4, 4), 0x08), mtime=0))
put("idx", "u8_labels.idx.gz", gzip.compress(idx(np.array([3, 1], "u1"), 0x08), mtime=0))
put("idx", "npy_inside.npy", npy(arrays["u1_3x2x2"]))

put("csv", "labels_pixels.csv", b"label,p1,p2,p3\n0,0,128,255\n1,255,0,3\n2,1,2,3\n")
put("csv", "floats.csv", b"1,0.5,-1.25,3e-2\n0,1.5,2.5,-0.75\n")
put("csv", "crlf.csv", b"y,a,b\r\n3,0.1,0.2\r\n1,0.3,0.4\r\n")
put("csv", "blank_lines.csv", b"\n0,1,2\n\n1,3,4\n\n")
put("csv", "spaces_tabs.csv", b" 0 , 1.0 ,\t2.0\n 1 ,3.0, 4.0 \n")
