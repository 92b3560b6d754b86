"""A Prometheus remote-write request as an attacker would send it: any labels (duplicates and
forged ones included), any sizes, snappy-compressed protobuf, posted with any login.

The WriteRequest message has three fields the receivers read (timeseries, labels, samples), so
its protobuf encoding is written out here rather than generated from prometheus/prompb's
.proto; snappy comes from cramjam (the same block format Prometheus and vmagent use)."""

from __future__ import annotations

import struct
import time

import cramjam


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _label(name: str, value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode()
    return _field(1, name.encode()) + _field(2, raw)


def _sample(value: float, timestamp_ms: int) -> bytes:
    # Sample: double value = 1 (wire type 1), int64 timestamp = 2 (varint).
    return b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(timestamp_ms)


def series(
    labels: list[tuple[str, str | bytes]], value: float = 1.0, timestamp_ms: int | None = None
) -> bytes:
    """One TimeSeries with one sample (now, unless timestamp_ms), labels in the order given."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    body = b"".join(_field(1, _label(n, v)) for n, v in labels)
    return body + _field(2, _sample(value, ts))


def write_request(*timeseries: bytes) -> bytes:
    """The snappy-compressed WriteRequest body of the given series, ready to POST."""
    message = b"".join(_field(1, ts) for ts in timeseries)
    return bytes(cramjam.snappy.compress_raw(message))


REMOTE_WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
