from __future__ import annotations

import numpy as np
import pytest

from drivelab.errors import DrivelabError
from drivelab.vq import api, container
from drivelab.vq.tokens import Segment, npy_bytes


def _seg(tokens: np.ndarray, name: str = "s.token.npy") -> Segment:
    return Segment(name=name, tokens=tokens, raw=npy_bytes(tokens))


def _inputs(real: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "real": real[:20],
        "zeros": np.zeros((6, 8, 16), np.int16),
        "max": np.full((6, 128), 1023, np.int16),
        "uniform": rng.integers(0, 1024, (6, 8, 16)).astype(np.int16),
        "int32": rng.integers(0, 1024, (3, 128)).astype(np.int32),
    }


@pytest.mark.parametrize("codec", ["lzma", "context"])
def test_round_trip_bit_exact(codec, real_tokens):
    for name, tokens in _inputs(real_tokens).items():
        seg = _seg(tokens)
        data = api.compress(seg, codec)
        back = api.decompress(data)
        assert back.raw == seg.raw, name
        assert back.tokens.dtype == tokens.dtype and back.tokens.shape == tokens.shape


def test_context_beats_lzma_on_real_tokens(real_tokens):
    seg = _seg(real_tokens[:40])
    assert len(api.compress(seg, "context")) < 0.9 * len(api.compress(seg, "lzma"))


def test_header_fields(real_tokens):
    seg = _seg(real_tokens[:5])
    header, payload = container.unpack(api.compress(seg, "lzma"))
    assert header.codec == "lzma" and header.shape == [5, 8, 16] and header.dtype == "<i2"
    assert header.sha256 == container.sha256(seg.raw)
    assert header.payload_len == len(payload)


def test_unusual_npy_header_is_restored_byte_identical(real_tokens):
    tokens = real_tokens[:3]
    raw = npy_bytes(tokens)
    # same array, header padded differently than np.save would write it
    hlen = int.from_bytes(raw[8:10], "little")
    header = raw[10 : 10 + hlen].rstrip(b"\n").rstrip(b" ") + b" " * 64 + b"\n"
    odd = raw[:8] + len(header).to_bytes(2, "little") + header + raw[10 + hlen :]
    seg = Segment("odd.npy", tokens, odd)
    assert api.decompress(api.compress(seg, "lzma")).raw == odd


@pytest.mark.parametrize(
    "bad",
    [
        np.full((2, 128), 1024, np.int16),
        np.full((2, 128), -1, np.int16),
        np.zeros((2, 128), np.float32),
        np.zeros((2, 7, 16), np.int16),
    ],
)
def test_invalid_tokens_refused(bad):
    with pytest.raises(DrivelabError):
        api.compress(_seg(bad), "context")


def test_truncated_and_corrupted_files_refused(real_tokens):
    data = api.compress(_seg(real_tokens[:10]), "context")
    with pytest.raises(DrivelabError, match="truncated"):
        api.decompress(data[:-7])
    with pytest.raises(DrivelabError, match="truncated"):
        api.decompress(data[:12])
    flipped = bytearray(data)
    flipped[-20] ^= 0x10
    with pytest.raises(DrivelabError, match="CRC"):
        api.decompress(bytes(flipped))
    with pytest.raises(DrivelabError, match="magic"):
        api.decompress(b"PK" + data[2:])


def test_unknown_codec_refused(real_tokens):
    with pytest.raises(DrivelabError, match="unknown codec"):
        api.compress(_seg(real_tokens[:2]), "bzip9")


def test_context_two_step_counts_are_exact(real_tokens):
    """The count vector fed to the tree for T @ T equals numpy's matrix product, minus its diagonal."""
    from drivelab.vq import cm

    x = np.ascontiguousarray(real_tokens[:30].reshape(-1), dtype=np.int16)
    _, _, mem, _, dense = cm.new_state()
    i = x.size - 5
    for j in range(i):
        cm._dense_update(x, j, dense)
    t = dense[cm.D_T : cm.D_T + cm.V * cm.V].reshape(cm.V, cm.V).astype(np.int64)
    assert (t == t.T).all() and t.sum() == 2 * int((x[128:i] != x[: i - 128]).sum())
    p1 = int(x[i - 128])
    want = (t @ t)[p1]
    want[p1] = 0
    cm._dense_rows(x, i, dense, mem)
    cm._dense_tree(mem, dense, 0, 0)
    tree = mem[cm.O_DT : cm.O_DT + cm.N_DENSE * 64].reshape(cm.N_DENSE, 64)
    assert (tree[3, 32:] == want.reshape(32, 32).sum(1)).all() and tree[3, 1] == want.sum()
    hi = int(x[i]) >> 5
    cm._dense_tree(mem, dense, 1, hi)
    assert (tree[3, 32:] == want[hi * 32 : hi * 32 + 32]).all()
