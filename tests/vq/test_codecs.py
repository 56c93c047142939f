"""Round trips, model behaviour and corruption handling of the lzma, context, prior and mix codecs."""

from __future__ import annotations

import numpy as np
import pytest

from drivelab.errors import DrivelabError
from drivelab.vq import api, cm, container
from drivelab.vq.store import SharedStore
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
        "one frame": real[:1],
    }


@pytest.mark.parametrize("codec", ["lzma", "context", "prior", "mix"])
def test_round_trip_bit_exact(codec, real_tokens, network_blob):
    opts = {"model": network_blob} if codec in ("prior", "mix") else {}
    for name, tokens in _inputs(real_tokens).items():
        seg = _seg(tokens)
        data = api.compress(seg, codec, **opts)
        back = api.decompress(data)
        assert back.raw == seg.raw, name
        assert back.tokens.dtype == tokens.dtype and back.tokens.shape == tokens.shape


def test_uniform_noise_costs_about_ten_bits(real_tokens):
    """The coder's overhead on incompressible tokens stays small (the floor on probabilities)."""
    tokens = np.random.default_rng(1).integers(0, 1024, (40, 128)).astype(np.int16)
    _, payload, _ = container.unpack(api.compress(_seg(tokens), "context"))
    assert 10.0 < len(payload) * 8 / tokens.size < 10.15


def test_context_beats_lzma_on_real_tokens(real_tokens):
    seg = _seg(real_tokens[:40])
    assert len(api.compress(seg, "context")) < 0.9 * len(api.compress(seg, "lzma"))


def test_header_fields(real_tokens):
    seg = _seg(real_tokens[:5])
    header, payload, inline = container.unpack(api.compress(seg, "lzma"))
    assert header.codec == "lzma" and header.name == "s.token.npy" and not inline
    assert header.layout == {"shape": [5, 8, 16], "dtype": "<i2", "fortran": False, "npy_header": None}
    assert header.sha256 == container.sha256(seg.raw)
    assert header.payload_len == len(payload)


def test_unusual_npy_header_is_restored_byte_identical(real_tokens):
    tokens = real_tokens[:3]
    raw = npy_bytes(tokens)
    # same array, header padded differently than np.save would write it
    hlen = int.from_bytes(raw[8:10], "little")
    header = raw[10 : 10 + hlen].rstrip(b"\n").rstrip(b" ") + b" " * 64 + b"\n"
    odd = raw[:8] + len(header).to_bytes(2, "little") + header + raw[10 + hlen :]
    from drivelab.vq.tokens import parse_npy

    seg = parse_npy(odd, "odd.npy")
    assert api.decompress(api.compress(seg, "context")).raw == odd


@pytest.mark.parametrize(
    "bad",
    [
        np.full((2, 128), 1024, np.int16),
        np.full((2, 128), -1, np.int16),
        np.zeros((2, 128), np.float32),
        np.zeros((2, 7, 16), np.int16),
        np.zeros((0, 128), np.int16),
    ],
)
def test_invalid_tokens_refused(bad):
    from drivelab.vq.tokens import parse_npy

    with pytest.raises(DrivelabError):
        parse_npy(npy_bytes(bad), "bad.npy")


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


def test_decoder_reads_only_what_the_encoder_wrote(real_tokens):
    """The binary coder's flush pins the last interval: a payload decodes to the same tokens
    whatever follows it, and a damaged payload decodes to different tokens (caught by SHA-256)."""
    x = np.ascontiguousarray(real_tokens[:12].reshape(-1), np.int16)
    _, payload = cm.run(x.copy(), cm.ENCODE, cm.USE_CM, cm.new_state(14))
    for tail in (b"", b"\xff" * 8, b"\x00" * 8):
        y, _ = cm.run(np.zeros_like(x), cm.DECODE, cm.USE_CM, cm.new_state(14), payload + tail)
        assert (y == x).all()
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 1
    y, _ = cm.run(np.zeros_like(x), cm.DECODE, cm.USE_CM, cm.new_state(14), bytes(bad))
    assert (y != x).any()


def test_context_two_step_counts_are_exact(real_tokens):
    """The count vector fed to the tree for T @ T equals numpy's matrix product, minus its diagonal."""
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
    # the partner lists the T @ T row walks hold exactly T's nonzero entries, while coding and
    # when rebuilt from a loaded T
    for state in (dense, cm.load_state(cm.state_bytes(cm.new_state()[:4] + (dense,)))[4]):
        deg = state[cm.D_DEG : cm.D_DEG + cm.V]
        adj = state[cm.D_ADJ : cm.D_ADJ + cm.V * cm.V].reshape(cm.V, cm.V)
        assert deg.sum() == (t != 0).sum()
        for a in np.flatnonzero(deg):
            assert sorted(adj[a, : deg[a]]) == list(np.flatnonzero(t[a]))


def test_solid_chain_equals_one_long_model(real_tokens):
    """Coding B after A in one chain costs what B costs when the model carries on from A, and
    less than B alone; a chain's later segment refuses to decode on its own."""
    a, b = real_tokens[:40], real_tokens[40:80]
    chain = api.Chain()
    store = SharedStore()
    first = api.compress(_seg(a, "a.npy"), "context", store=store, chain=chain)
    second = api.compress(_seg(b, "b.npy"), "context", store=store, chain=chain)
    alone = api.compress(_seg(b, "b.npy"), "context")
    assert len(second) < 0.97 * len(alone)
    with pytest.raises(DrivelabError, match="solid chain"):
        api.decompress(second)
    back = api.Chain()
    assert api.decompress(first, chain=back, store=store).raw == npy_bytes(a)
    assert api.decompress(second, chain=back, store=store).raw == npy_bytes(b)


def test_starting_state_round_trip_and_gain(real_tokens):
    """A starting state learnt on frames 0-99 helps frames 100-139 and is stored inline once."""
    blob, bits = cm.train_state([real_tokens[:100].reshape(-1, 128)])
    assert 4 < bits < 8
    seg = _seg(real_tokens[100:140])
    warm = api.compress(seg, "context", start=blob)
    cold = api.compress(seg, "context")
    header, payload, inline = container.unpack(warm)
    assert list(inline) == header.shared == [container.sha256(blob)]
    assert len(payload) < 0.97 * len(container.unpack(cold)[1])
    assert api.decompress(warm).raw == seg.raw
    with pytest.raises(DrivelabError, match="starting state"):
        cm.load_state(blob[:-10])
