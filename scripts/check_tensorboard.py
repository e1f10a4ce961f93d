#!/usr/bin/env python3
"""Read TensorBoard event files back with the real TensorBoard reader.

Checks what our Rust writer (crates/ldm-train/src/tensorboard.rs) produced:

  check_tensorboard.py RUN_DIR|TB_DIR|EVENT_FILE
      [--expect-scalars train/loss,train/lr]
      [--expect-image TAG --image-size WxH]   (repeatable)
      [--expect-histogram TAG]                (repeatable)

PATH may be a run directory (its tensorboard/ subdirectory is used), the
event directory itself, or a single events.out.tfevents.* file.

Besides going through TensorBoard's EventAccumulator, every record of every
event file is checked for valid TFRecord framing with TensorBoard's own
masked CRC32C: the accumulator silently stops at a corrupt record, so a bad
CRC would otherwise look like "fewer events".

Run it through scripts/tensorboard_check.sh, which provides a venv with a
pinned tensorboard. Exit status 0 when all checks pass, 1 on a failed
check, 2 on bad usage.
"""

import argparse
import io
import os
import struct
import sys


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_size(text):
    try:
        w, h = text.lower().split("x")
        w, h = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 96x40, got {text!r}")
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return (w, h)


def resolve_path(path):
    """Return (path for EventAccumulator, list of event files)."""
    if os.path.isfile(path):
        return path, [path]
    if not os.path.isdir(path):
        fail(f"{path} does not exist")
    sub = os.path.join(path, "tensorboard")
    if os.path.isdir(sub):
        path = sub
    files = sorted(
        os.path.join(path, f) for f in os.listdir(path) if "tfevents" in f
    )
    if not files:
        fail(f"no events.out.tfevents.* file in {path}")
    return path, files


def check_framing(path):
    """Walk the TFRecords of one file; return the number of records.

    Uses TensorBoard's masked_crc32c (an implementation independent of ours)
    and requires the file to end exactly at a record boundary, and every
    payload to parse as an Event, the first being file_version brain.Event:2.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    with open(path, "rb") as f:
        data = f.read()
    pos, count = 0, 0
    name = os.path.basename(path)
    while pos < len(data):
        if len(data) - pos < 12:
            fail(f"{name}: {len(data) - pos} trailing bytes, not a record header")
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if masked_crc32c(header) != len_crc:
            fail(f"{name}: record {count} at byte {pos}: length CRC mismatch")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            fail(f"{name}: record {count} at byte {pos}: truncated")
        payload = data[start:end]
        (data_crc,) = struct.unpack("<I", data[end : end + 4])
        if masked_crc32c(payload) != data_crc:
            fail(f"{name}: record {count} at byte {pos}: data CRC mismatch")
        try:
            event = event_pb2.Event.FromString(payload)
        except Exception as e:  # protobuf raises DecodeError; be broad
            fail(f"{name}: record {count}: not an Event proto: {e}")
        if count == 0 and event.file_version != "brain.Event:2":
            fail(f"{name}: first event has file_version {event.file_version!r}")
        pos = end + 4
        count += 1
    if count == 0:
        fail(f"{name}: empty event file")
    return count


def load(path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    size_guidance = {
        ea.COMPRESSED_HISTOGRAMS: 0,
        ea.IMAGES: 0,
        ea.AUDIO: 0,
        ea.SCALARS: 0,
        ea.HISTOGRAMS: 0,
        ea.TENSORS: 0,
    }
    # purge_orphaned_data=False: purging would silently drop out-of-order
    # steps, the very thing the monotonicity check must see.
    acc = ea.EventAccumulator(
        path, size_guidance=size_guidance, purge_orphaned_data=False
    )
    acc.Reload()
    return acc


def load_plugin_view(path):
    """Load the way the TensorBoard server does: legacy summaries are
    migrated to tensors (data_compat), which is what the UI then shows."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(
        path, size_guidance={pea.TENSORS: 0}, purge_orphaned_data=False
    )
    acc.Reload()
    return acc


def plugin_tensors(pacc, plugin, tag):
    from tensorboard.util import tensor_util

    if tag not in pacc.PluginTagToContent(plugin):
        fail(f"{plugin} plugin does not list {tag} (server view)")
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in pacc.Tensors(tag)]


def check_steps(kind, tag, steps):
    if not steps:
        fail(f"{kind} {tag}: no events")
    for a, b in zip(steps, steps[1:]):
        if b <= a:
            fail(f"{kind} {tag}: steps not increasing ({a} then {b})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="run dir, its tensorboard/ dir, or an event file")
    p.add_argument("--expect-scalars", default="", help="comma-separated tags")
    p.add_argument("--expect-image", action="append", default=[], metavar="TAG")
    p.add_argument(
        "--image-size",
        action="append",
        default=[],
        type=parse_size,
        metavar="WxH",
        help="once for all --expect-image tags, or once per tag in order",
    )
    p.add_argument("--expect-histogram", action="append", default=[], metavar="TAG")
    args = p.parse_args()

    sizes = args.image_size
    if args.expect_image:
        if len(sizes) == 1:
            sizes = sizes * len(args.expect_image)
        elif len(sizes) != len(args.expect_image):
            p.error("give --image-size once, or once per --expect-image")
    elif sizes:
        p.error("--image-size needs --expect-image")

    try:
        import tensorboard
        from PIL import Image
    except ImportError as e:
        fail(f"{e}; run this through scripts/tensorboard_check.sh")

    acc_path, files = resolve_path(args.path)
    for f in files:
        n = check_framing(f)
        print(f"file {os.path.basename(f)}: {n} records, framing and CRCs ok")

    acc = load(acc_path)
    tags = acc.Tags()
    pacc = load_plugin_view(acc_path)

    for tag in [t for t in args.expect_scalars.split(",") if t]:
        if tag not in tags["scalars"]:
            fail(f"scalar {tag}: missing (scalars present: {sorted(tags['scalars'])})")
        events = acc.Scalars(tag)
        check_steps("scalar", tag, [e.step for e in events])
        server = plugin_tensors(pacc, "scalars", tag)
        if len(server) != len(events):
            fail(f"scalar {tag}: server view has {len(server)} events, reader {len(events)}")
        print(
            f"scalar {tag}: {len(events)} events, steps {events[0].step}..{events[-1].step}, "
            f"last value {events[-1].value:.6g}"
        )

    for tag, (want_w, want_h) in zip(args.expect_image, sizes):
        if tag not in tags["images"]:
            fail(f"image {tag}: missing (images present: {sorted(tags['images'])})")
        events = acc.Images(tag)
        check_steps("image", tag, [e.step for e in events])
        for e in events:
            try:
                img = Image.open(io.BytesIO(e.encoded_image_string))
                img.load()
            except Exception as ex:
                fail(f"image {tag} step {e.step}: PNG does not decode: {ex}")
            if img.format != "PNG":
                fail(f"image {tag} step {e.step}: encoded as {img.format}, not PNG")
            got = img.size  # PIL gives (width, height)
            if got != (want_w, want_h):
                fail(
                    f"image {tag} step {e.step}: PNG is {got[0]}x{got[1]}, "
                    f"expected {want_w}x{want_h}"
                )
            if (e.width, e.height) != (want_w, want_h):
                fail(
                    f"image {tag} step {e.step}: Summary.Image says "
                    f"{e.width}x{e.height}, expected {want_w}x{want_h}"
                )
        for step, t in plugin_tensors(pacc, "images", tag):
            # The images plugin reads [b"width", b"height", png...].
            dims = (int(t[0]), int(t[1]))
            if dims != (want_w, want_h):
                fail(
                    f"image {tag} step {step}: server view says {dims[0]}x{dims[1]}, "
                    f"expected {want_w}x{want_h}"
                )
        print(
            f"image {tag}: {len(events)} events, steps {events[0].step}..{events[-1].step}, "
            f"PNG {img.size[0]}x{img.size[1]} mode {img.mode}, "
            f"summary width={e.width} height={e.height}"
        )

    for tag in args.expect_histogram:
        if tag not in tags["histograms"]:
            fail(f"histogram {tag}: missing (histograms present: {sorted(tags['histograms'])})")
        events = acc.Histograms(tag)
        check_steps("histogram", tag, [e.step for e in events])
        for e in events:
            h = e.histogram_value
            if len(h.bucket) != len(h.bucket_limit):
                fail(f"histogram {tag} step {e.step}: {len(h.bucket)} counts vs {len(h.bucket_limit)} limits")
            if abs(sum(h.bucket) - h.num) > 1e-6 * max(1.0, h.num):
                fail(f"histogram {tag} step {e.step}: bucket counts sum to {sum(h.bucket)}, num is {h.num}")
            if any(b <= a for a, b in zip(h.bucket_limit, h.bucket_limit[1:])):
                fail(f"histogram {tag} step {e.step}: bucket limits not increasing")
            if h.num and not (h.min <= h.max):
                fail(f"histogram {tag} step {e.step}: min {h.min} > max {h.max}")
        # The distributions plugin's compression must cope with our buckets.
        compressed = acc.CompressedHistograms(tag)
        if len(compressed) != len(events):
            fail(f"histogram {tag}: {len(compressed)} compressed vs {len(events)} events")
        # The histograms plugin reads [left, right, count] rows.
        for step, t in plugin_tensors(pacc, "histograms", tag):
            if t.size and (t.ndim != 2 or t.shape[1] != 3):
                fail(f"histogram {tag} step {step}: server view has shape {t.shape}")
            if t.size and (t[:, 0] > t[:, 1]).any():
                fail(f"histogram {tag} step {step}: server view has a bucket with left > right")
        h = events[-1].histogram_value
        print(
            f"histogram {tag}: {len(events)} events, steps {events[0].step}..{events[-1].step}, "
            f"last num={h.num:g} min={h.min:.4g} max={h.max:.4g} buckets={len(h.bucket)}"
        )

    print("OK: TensorBoard reads the event files back as expected")


if __name__ == "__main__":
    main()
