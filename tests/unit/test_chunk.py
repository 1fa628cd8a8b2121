"""Chunk formats v2 (quantised, reduced) and v1 (float16): roundtrip, error bounds, validation, corrupt bytes,
the bytes formula."""

import io
import zipfile

import numpy as np
import pytest

from mycelium.records.chunk import LN2, Chunk, bytes_per_problem, decode_chunk, encode_chunk, max_error
from mycelium.core.errors import ChunkFormatError


def make_chunk(L=3, H=4, T=7, P=5, d=16, k=2, rng=None):
    rng = rng or np.random.default_rng(0)
    head_set = np.array([(i, -1) for i in range(L)] + [(1, 2), (2, 0)][:k], dtype=np.int16)
    return Chunk(
        meta={"problem_id": "p000000000001", "n_problem_tokens": P},
        iaf=rng.random((L, H, T)), jsd=rng.random((L, H, T)) * LN2, entropy=rng.random((L, H, T)),
        connectivity=rng.integers(0, 9, (L, H, T)).astype(float), attn_problem=rng.random((L + k, T, P)),
        head_set=head_set, hidden=rng.standard_normal((T, d)), cot_token_ids=np.arange(T),
    )


def test_v1_roundtrip_is_fp16_and_keeps_shapes():
    c = make_chunk()
    back = decode_chunk(encode_chunk(c, version=1))
    assert back.meta["format_version"] == 1 and back.problem_id == "p000000000001"
    for name, arr in c.arrays().items():
        got = getattr(back, name)
        assert got.shape == arr.shape
        np.testing.assert_allclose(got, arr, rtol=1e-3, atol=1e-3)
    assert back.iaf.dtype == np.float16 and back.head_set.dtype == np.int16
    assert back.layer_mean_attention().shape == (3, 7, 5) and back.computing_head_attention().shape == (2, 7, 5)


def test_v2_roundtrip_is_within_the_documented_quantisation_error():
    c = make_chunk(L=3, H=4, T=40, P=9, d=32, k=2)
    c.hidden[:, 3] *= 300.0  # an outlier channel (massive activations) must not cost the others their precision
    back = decode_chunk(encode_chunk(c))
    assert back.meta["format_version"] == 2 and back.format_version == 2
    for name in ("iaf", "jsd"):
        err = np.abs(back.iaf - c.iaf) if name == "iaf" else np.abs(back.jsd - c.jsd)
        assert err.max() <= max_error(name) + 1e-7 and err.max() > max_error(name) / 4  # quantised, not copied
    # entropy and connectivity: each layer's head mean
    np.testing.assert_allclose(back.entropy[:, 0], c.entropy.mean(1), atol=1e-3)
    assert back.connectivity.shape == (3, 1, 40)
    # attention: row 0 the mean over every layer and head, then the computing heads, each row within max/510
    assert back.head_set.tolist() == [[-1, -1], [1, 2], [2, 0]]
    want = np.concatenate([c.layer_mean_attention().mean(0, keepdims=True), c.computing_head_attention()])
    assert np.all(np.abs(back.attn_problem - want) <= max_error("attn_problem", c) + 1e-6)
    np.testing.assert_allclose(back.layer_mean_attention().mean(0), c.layer_mean_attention().mean(0), atol=2e-3)
    assert back.computing_head_attention().shape == (2, 40, 9)
    # hidden: per channel within max|h| / 254; the ordinary channels keep their own scale
    err = np.abs(back.hidden - c.hidden)
    assert np.all(err <= max_error("hidden", c) + 1e-6)
    assert err[:, np.arange(32) != 3].max() < 0.02
    np.testing.assert_array_equal(back.cot_token_ids, c.cot_token_ids)


def test_v2_clips_a_bounded_signal_out_of_its_range():
    c = make_chunk()
    c.iaf[0, 0, 0], c.jsd[0, 0, 0] = 1.3, -0.1
    back = decode_chunk(encode_chunk(c))
    assert back.iaf[0, 0, 0] == 1.0 and back.jsd[0, 0, 0] == 0.0


@pytest.mark.parametrize("version", [1, 2])
def test_formula_matches_uncompressed_size(version):
    L, H, T, P, d, k = 3, 4, 7, 5, 16, 2
    data = encode_chunk(make_chunk(L, H, T, P, d, k), version=version)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        raw = sum(i.file_size for i in z.infolist() if i.filename != "meta.npy")
        headers = 128 * (len(z.infolist()) - 1)  # each .npy has a 128-byte header
    formula = bytes_per_problem(L, H, T, P, d, k, version=version) - 1024  # minus the meta estimate
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
    assert bytes_per_problem(28, 28, 300, 100, 3584, 8, version=1) == \
        2 * (4 * 28 * 28 * 300 + 36 * 300 * 100 + 300 * 3584) + 4 * 36 + 4 * 300 + 1024
    v2 = bytes_per_problem(28, 28, 300, 100, 3584, 8)
    assert v2 == 2 * 28 * 28 * 300 + 4 * 28 * 300 + 9 * 300 * 100 + 4 * 9 * 300 + 300 * 3584 + 4 * 3584 \
        + 4 * 9 + 4 * 300 + 1024
    assert v2 <= 2.4e6


def test_a_v2_chunk_missing_an_array_or_of_another_dtype_is_a_format_error():
    data = encode_chunk(make_chunk())
    with np.load(io.BytesIO(data)) as z:
        arrays = {n: z[n] for n in z.files}
    for broken, match in [({k: v for k, v in arrays.items() if k != "attn_scale"}, "missing arrays"),
                          ({**arrays, "iaf_q": arrays["iaf_q"].astype(np.float32)}, "iaf_q is float32"),
                          ({**arrays, "hidden_scale": arrays["hidden_scale"][:-1]}, "hidden_scale shape")]:
        buf = io.BytesIO()
        np.savez_compressed(buf, **broken)
        with pytest.raises(ChunkFormatError, match=match):
            decode_chunk(buf.getvalue(), "k")


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


@pytest.mark.parametrize("version", [1, 2])
def test_every_flipped_byte_gives_a_valid_chunk_or_a_format_error(version):
    data = bytearray(encode_chunk(make_chunk(), version=version))
    for pos in range(0, len(data), max(1, len(data) // 400)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        try:
            decode_chunk(bytes(bad), "k")
        except ChunkFormatError:
            pass
