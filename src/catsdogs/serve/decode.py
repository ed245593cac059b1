"""Bounded decode memory: what an upload will cost to decode is known from its header, before decoding.

A JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (``draft``), so even 40 MP costs little.
PNG, BMP, GIF, WebP and TIFF have no reduced decode: every pixel is materialised (a 131 KB PNG of
6300x6300 pixels is 119 MB of RGB, plus copies). So:

* those formats get a lower pixel cap (``max_lossless_pixels``) than JPEG (``max_image_pixels``);
* each worker has a decode memory budget (``decode_memory_mb``): a request waits (in its worker thread)
  until its images fit in it, so a burst of large images is decoded a few at a time, not all at once.
  An image larger than the whole budget runs alone.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from PIL import Image

from catsdogs.inference.predictor import PredictionError

MiB = 1024 * 1024
_DRAFT_FORMATS = frozenset({"JPEG"})
# Peak memory per decoded pixel: Pillow stores RGB in 4 bytes, plus a conversion copy at times.
# Measured: one 4000x3000 PNG raises a worker's peak RSS by 92 MB (7.7 bytes per pixel).
_BYTES_PER_PIXEL = 8


def _draft_scale(width: int, height: int, target: int) -> int:
    """The DCT scale (1, 2, 4 or 8) Pillow's ``draft`` picks for a ``target`` x ``target`` request."""
    scale = 1
    while scale < 8 and width // (scale * 2) >= target and height // (scale * 2) >= target:
        scale *= 2
    return scale


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame (not DHT, JPG, DAC)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, by jumping over the segments before it.

    About 30x cheaper than ``Image.open`` (which parses EXIF and ICC data too); None if not found.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(data) - 9
    while pos < end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return (width, height) if width and height else None
        if marker in (0x01, *range(0xD0, 0xD8)):  # segments without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def inspect(
    data: bytes, target: int, max_lossless_pixels: int, max_any_pixels: int
) -> tuple[int, PredictionError | None]:
    """(estimated decode bytes, refusal or None) from the header only; unknown data costs 0 here
    (the predictor refuses it with the right reason)."""
    size = jpeg_size(data)
    if size is not None:
        scale = _draft_scale(size[0], size[1], target)
        pixels = size[0] * size[1]
        return (0, None) if pixels > max_any_pixels else (pixels // (scale * scale) * _BYTES_PER_PIXEL, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format, img.size
    except Exception:  # not an image, corrupt, a bomb: the predictor's own checks name the problem
        return 0, None
    pixels = width * height
    if pixels > max_any_pixels:
        return 0, None
    if fmt in _DRAFT_FORMATS:
        scale = _draft_scale(width, height, target)
        return pixels // (scale * scale) * _BYTES_PER_PIXEL, None
    if max_lossless_pixels < pixels <= max_any_pixels:  # above both: the predictor refuses it as for any format
        message = (
            f"image is {width}x{height} pixels; a {fmt} image may have at most {max_lossless_pixels:,} pixels "
            "(a JPEG may be larger)"
        )
        return 0, PredictionError("too_many_pixels", message)
    return pixels * _BYTES_PER_PIXEL, None


class DecodeBudget:
    """A weighted semaphore over bytes of decode memory, for the worker threads of one process."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self.in_use = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        cost = min(cost, self.capacity)  # larger than everything: runs alone
        with self._cond:
            self._cond.wait_for(lambda: self.in_use + cost <= self.capacity)
            self.in_use += cost
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= cost
                self._cond.notify_all()


def screen(
    images: Sequence[bytes], target: int, max_lossless_pixels: int, max_any_pixels: int
) -> tuple[int, dict[int, PredictionError]]:
    """Total estimated decode bytes of the images to run, and the ones refused before decoding (by index)."""
    total, refused = 0, {}
    for i, data in enumerate(images):
        cost, problem = inspect(data, target, max_lossless_pixels, max_any_pixels)
        if problem is not None:
            refused[i] = problem
        total += cost
    return total, refused
