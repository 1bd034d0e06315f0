"""Arrow text as NumPy fixed-width bytes, for sorting and searching keys of one length (GUIDs) in C."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def fixed_width_bytes(text: pa.Array) -> np.ndarray | None:
    """The values of a text array as a NumPy array of fixed-width bytes (a view of its buffer, no copy) when every
    value is present, not empty, of one length in bytes and free of NUL bytes (which NumPy's bytes type would drop
    at the end); None otherwise. Byte order is the order in which Arrow compares text."""
    if text.null_count or not len(text) or not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        return None
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]
    lengths = np.diff(offsets)
    size = int(lengths[0])
    if size == 0 or (lengths != size).any():
        return None
    values = np.frombuffer(text.buffers()[2], dtype=f"S{size}", count=len(text), offset=int(offsets[0]))
    if (values.view(np.uint8) == 0).any():
        return None
    return values
