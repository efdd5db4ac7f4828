"""Bad remote-write requests against one running server: each gets the right status and
a message naming the problem, the server keeps serving, and the data stored before is
left exactly as it was."""

from __future__ import annotations

import os

import pytest
import snappy

from tests.helpers import (
    STALE_NAN_BITS,
    ServerProcess,
    bits,
    encode_write_request,
    f64,
    read_data_dir,
    snappy_write_body,
)

T0 = 1_700_000_000_000
MAX_REQUEST_BYTES = 1 << 20  # --max-request-bytes 1MiB
MAX_DECODED_BYTES = 4 << 20  # PROMSTORE_MAX_DECODED_BYTES
MAX_ERROR_BODY = 16 << 10  # an error message must not echo a huge request back

BASE = [
    ({"__name__": "base_metric", "job": "a"}, [(T0, 1.0), (T0 + 1000, f64(STALE_NAN_BITS))]),
    ({"__name__": "base_metric", "job": "b"}, [(T0, -0.0)]),
]
BASE_SERIES = [{"__name__": "base_metric", "job": "a"}, {"__name__": "base_metric", "job": "b"}]
GOOD = {"__name__": "good"}


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (for hand-made broken messages)."""
    length = len(payload)
    out = bytearray([number << 3 | 2])
    while length >= 0x80:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out) + payload


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    srv = ServerProcess(tmp / "data", "--max-request-bytes", "1MiB",
                        env={"PROMSTORE_MAX_DECODED_BYTES": "4MiB"}, log_path=tmp / "server.log")
    try:
        srv.start()
        resp = srv.write(BASE)
        assert resp.status == 204, resp.text
        yield srv
        # Nothing the bad requests did reached the disk either.
        assert srv.stop(timeout=10) == 0, srv.log()
        stored = read_data_dir(tmp / "data")
        assert stored.samples == {
            tuple(sorted(labels.items())): [(t, bits(v)) for t, v in samples]
            for labels, samples in BASE}
        assert stored.rows == 3
    finally:
        srv.kill()


def assert_unharmed(server: ServerProcess) -> None:
    assert server.get("/-/healthy").status == 200
    assert server.get("/-/ready").status == 200
    assert server.series() == BASE_SERIES


def check(resp, status: int, *words: str) -> None:
    assert resp.status == status, resp.text
    assert len(resp.body) <= MAX_ERROR_BODY, len(resp.body)
    for word in words:
        assert word.lower() in resp.text.lower(), (word, resp.text)


# -- bodies that are not a remote-write request -----------------------------------------

BROKEN_BODIES = {
    "not snappy": (b"this is not snappy at all", 400, ["snappy"]),
    "truncated snappy": (snappy_write_body(BASE * 50)[:200], 400, ["snappy"]),
    "empty body": (b"", 400, ["snappy"]),
    "garbage protobuf": (snappy.compress(b"\xff\xff\xff\xff\xff"), 400, ["protobuf"]),
    "truncated protobuf": (snappy.compress(encode_write_request([(GOOD, [(T0, 1.0)])])[:-3]),
                           400, ["protobuf"]),
    "wrong wire type": (snappy.compress(b"\x08\x01"), 400, ["protobuf", "wire type"]),
    "length past the end": (snappy.compress(b"\x0a\xff\xff\xff\xff\x0f"), 400,
                            ["protobuf", "length"]),
    "sample value as varint": (
        snappy.compress(_field(1, _field(1, _field(1, b"__name__") + _field(2, b"good"))
                               + _field(2, b"\x08\x01\x10\x01"))),
        400, ["protobuf", "Sample"]),
    # A tiny body whose header declares 4 GiB - 1: refused before anything is allocated.
    "snappy bomb": (b"\xff\xff\xff\xff\x0f" + b"\x00" * 16, 413, ["4294967295"]),
    # Within the limit, but more than the compressed bytes could ever expand to.
    "impossible snappy length": (b"\x80\x89\x7a" + b"\x00" * 8, 400, ["snappy"]),
    # Honest snappy of a valid message (one unknown field of zeros) that decompresses past
    # the 4 MiB limit while compressing well under the 1 MiB one.
    "decompressed too big": (snappy.compress(_field(15, bytes(MAX_DECODED_BYTES + 1000))), 413,
                             [str(MAX_DECODED_BYTES)]),
}


@pytest.mark.parametrize("name", list(BROKEN_BODIES))
def test_broken_body(server, name):
    body, status, words = BROKEN_BODIES[name]
    if name == "decompressed too big":
        assert len(body) < MAX_REQUEST_BYTES
    check(server.write(body=body), status, *words)
    assert_unharmed(server)


def test_empty_write_request_is_accepted(server):
    check(server.write([]), 204)
    assert server.write(body=snappy.compress(b"")).status == 204
    assert_unharmed(server)


def test_missing_headers_mean_remote_write_1(server):
    body = snappy_write_body([])
    resp = server.request("POST", "/api/v1/write", body, {})
    check(resp, 204)
    assert_unharmed(server)


# -- headers ------------------------------------------------------------------------------

# aiohttp decodes the encodings it knows before the handler runs and answers 400 itself
# for those whose library is missing; remote-write senders drop a batch on 400.
_PARSER_DECODES = ("promstore/server.py serve(): aiohttp's request parser answers 400 for "
                   "zstd/br bodies before the write handler can answer 415 "
                   "(run_app needs auto_decompress=False)")


@pytest.mark.parametrize("headers, words", [
    ({"Content-Type": "text/plain"}, ["Content-Type", "text/plain"]),
    ({"Content-Type": "application/json"}, ["Content-Type"]),
    ({"Content-Encoding": "gzip"}, ["Content-Encoding", "gzip"]),
    ({"Content-Encoding": "deflate"}, ["Content-Encoding", "deflate"]),
    pytest.param({"Content-Encoding": "zstd"}, ["Content-Encoding", "zstd"], id="zstd"),
    pytest.param({"Content-Encoding": "br"}, ["Content-Encoding", "br"], id="br"),
    ({"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
      "X-Prometheus-Remote-Write-Version": "2.0.0"}, ["io.prometheus.write.v2.Request"]),
], ids=["text", "json", "gzip", "deflate", "zstd", "br", "v2"])
def test_unsupported_media_type(server, headers, words):
    check(server.write([(GOOD, [(T0, 1.0)])], headers=headers), 415, *words)
    assert_unharmed(server)


def test_explicit_v1_proto_parameter_is_accepted(server):
    headers = {"Content-Type": "application/x-protobuf;proto=prometheus.WriteRequest"}
    check(server.write([], headers=headers), 204)


# -- series the head must refuse ----------------------------------------------------------

BAD_SERIES = {
    "invalid label name": ([("__name__", "m"), ("bad-name", "x")], ["invalid label name",
                                                                    "bad-name"]),
    "label name starting with a digit": ([("__name__", "m"), ("1abc", "x")],
                                         ["invalid label name", "1abc"]),
    "duplicate label name": ([("__name__", "m"), ("a", "1"), ("a", "2")],
                             ["duplicate label name", "'a'"]),
    "invalid UTF-8 value": ([("__name__", "m"), ("a", b"\xff\xfe")], ["UTF-8"]),
    "invalid UTF-8 name": ([("__name__", "m"), (b"a\xc3", "x")], ["UTF-8"]),
    "invalid metric name": ([("__name__", "1metric")], ["invalid metric name", "1metric"]),
    "metric name with a dash": ([("__name__", "my-metric")], ["invalid metric name"]),
    "no labels": ([], ["no labels"]),
    "10000 labels": ([("__name__", "m")] + [(f"l{i}", "v") for i in range(10_000)],
                     ["too many labels"]),
    "1 MB label value": ([("__name__", "m"), ("big", "x" * (1 << 20))],
                         ["label value too long", "big"]),
    "long label name": ([("__name__", "m"), ("n" * 2000, "x")], ["label name too long"]),
}


@pytest.mark.parametrize("name", list(BAD_SERIES))
def test_invalid_series(server, name):
    labels, words = BAD_SERIES[name]
    check(server.write([(labels, [(T0, 1.0)])]), 400, *words)
    assert_unharmed(server)


def test_many_invalid_series_give_a_bounded_message(server):
    series = [([("__name__", f"bad-{i}")], [(T0, 1.0)]) for i in range(2000)]
    check(server.write(series), 400, "invalid metric name", "bad-0")
    assert_unharmed(server)


# -- size limits and methods --------------------------------------------------------------

def test_body_over_the_compressed_limit(server):
    body = os.urandom(MAX_REQUEST_BYTES + 1)
    check(server.write(body=body), 413, str(MAX_REQUEST_BYTES))
    assert_unharmed(server)


def test_chunked_body_over_the_compressed_limit(server):
    """Without Content-Length the limit must still hold while reading."""
    chunk = os.urandom(64 << 10)
    chunks = [chunk] * (MAX_REQUEST_BYTES // len(chunk) + 2)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    try:
        resp = server.request("POST", "/api/v1/write", iter(chunks), headers)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the client finished sending: also a refusal
    else:
        check(resp, 413)
    assert_unharmed(server)


def test_get_on_write_endpoint_is_not_allowed(server):
    resp = server.get("/api/v1/write")
    assert resp.status == 405
    assert "POST" in resp.headers.get("allow", "")
    assert_unharmed(server)
