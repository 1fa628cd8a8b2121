"""Chunk format v1: roundtrip, validation, corrupt bytes, the bytes formula."""

import io
import zipfile

import numpy as np
import pytest

from mycelium.records.chunk import Chunk, bytes_per_problem, decode_chunk, encode_chunk
from mycelium.core.errors import ChunkFormatError


def make_chunk(L=3, H=4, T=7, P=5, d=16, k=2, rng=None):
    rng = rng or np.random.default_rng(0)
    head_set = np.array([(i, -1) for i in range(L)] + [(1, 2), (2, 0)][:k], dtype=np.int16)
    return Chunk(
        meta={"problem_id": "p000000000001", "n_problem_tokens": P},
        iaf=rng.random((L, H, T)), jsd=rng.random((L, H, T)), entropy=rng.random((L, H, T)),
        connectivity=rng.integers(0, 9, (L, H, T)).astype(float), attn_problem=rng.random((L + k, T, P)),
        head_set=head_set, hidden=rng.standard_normal((T, d)), cot_token_ids=np.arange(T),
    )


def test_roundtrip_is_fp16_and_keeps_shapes():
    c = make_chunk()
    back = decode_chunk(encode_chunk(c))
    assert back.meta["format_version"] == 1 and back.problem_id == "p000000000001"
    for name, arr in c.arrays().items():
        got = getattr(back, name)
        assert got.shape == arr.shape
        np.testing.assert_allclose(got, arr, rtol=1e-3, atol=1e-3)
    assert back.iaf.dtype == np.float16 and back.head_set.dtype == np.int16
    assert back.layer_mean_attention().shape == (3, 7, 5) and back.computing_head_attention().shape == (2, 7, 5)


def test_formula_matches_uncompressed_size():
    L, H, T, P, d, k = 3, 4, 7, 5, 16, 2
    data = encode_chunk(make_chunk(L, H, T, P, d, k))
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        raw = sum(i.file_size for i in z.infolist() if i.filename != "meta.npy")
        headers = 128 * (len(z.infolist()) - 1)  # each .npy has a 128-byte header
    formula = bytes_per_problem(L, H, T, P, d, k) - 1024  # minus the meta estimate
    assert raw - headers == formula


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d[: len(d) // 2], "unreadable"),
    (lambda d: b"garbage" * 10, "unreadable"),
])
def test_corrupt_bytes_name_the_key(mutate, match):
    data = mutate(encode_chunk(make_chunk()))
    with pytest.raises(ChunkFormatError, match=f"chunk run/chunks/p1.npz: {match}"):
        decode_chunk(data, "run/chunks/p1.npz")


def test_shape_mismatch_is_rejected():
    c = make_chunk()
    c.jsd = c.jsd[:, :, :-1]
    with pytest.raises(ChunkFormatError, match="jsd has shape"):
        encode_chunk(c)


def test_unknown_version_is_rejected():
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(b'{"format_version": 99}', dtype=np.uint8))
    with pytest.raises(ChunkFormatError, match="format version 99"):
        decode_chunk(buf.getvalue(), "k")


def test_seven_b_teacher_formula():
    # 28 layers, 28 heads, d=3584, 300 CoT tokens, 100 problem tokens, 8 computing heads
    assert bytes_per_problem(28, 28, 300, 100, 3584, 8) == 2 * (4 * 28 * 28 * 300 + 36 * 300 * 100 + 300 * 3584) + 4 * 36 + 4 * 300 + 1024


def test_wrong_dimensions_and_meta_types_are_format_errors():
    c = make_chunk()
    arrays = {n: a for n, a in c.arrays().items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(b'{"format_version": 1}', dtype=np.uint8),
                        **{**arrays, "iaf": arrays["iaf"][0]})
    with pytest.raises(ChunkFormatError, match="iaf has 2 dimensions"):
        decode_chunk(buf.getvalue(), "k")
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(b"[1]", dtype=np.uint8), **arrays)
    with pytest.raises(ChunkFormatError, match="meta is a JSON list"):
        decode_chunk(buf.getvalue(), "k")


def test_every_flipped_byte_gives_a_valid_chunk_or_a_format_error():
    data = bytearray(encode_chunk(make_chunk()))
    for pos in range(0, len(data), max(1, len(data) // 400)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        try:
            decode_chunk(bytes(bad), "k")
        except ChunkFormatError:
            pass
