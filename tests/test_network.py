"""The network model: SPEC §2's units, message sizes, connectivity, FLOPs and parameters; persistence.

Properties checked:
- on a conv → maxpool → conv → flatten → dense network worked out by hand: n_l, s_l (after activation and
  pooling), o_l, M_l (conv: any nonzero in W[i, j]; after Flatten: any nonzero in the channel's columns),
  nnz, FLOPs ``2·nnz·o + o`` and parameters ``nnz + 1`` per unit;
- the Flatten rule also holds for a Dense layer reading a flattened image input;
- construction refuses layer sequences the model cannot mean (pooling or conv after a flat vector,
  layers after the output, mismatched widths);
- ``save``/``load`` round-trips bit-exactly (weights, dtypes, configuration, forward), without pickle,
  atomically, with the permissions a plain file gets; corrupted, truncated, foreign, newer-version and
  missing files raise FormatError.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import repurpose_opt as ro
from repurpose_opt import _io
from repurpose_opt.testing import random_conv_network, random_dense_network


def _hand_network() -> ro.Network:
    """input (2, 6, 6) → conv 2→3 (3×3, pad 1) → ReLU → maxpool 2 → conv 3→4 (2×2) → ReLU → flatten → dense 16→5."""
    W1 = np.ones((3, 2, 3, 3))
    W1[0, 1] = 0.0  # unit 0 reads input channel 0 only
    W1[2, 0, 1:, :] = 0.0  # unit 2 still reads channel 0 (through its first kernel row): 3 + 9 nonzeros
    W2 = np.zeros((4, 3, 2, 2))
    W2[0, 0] = 1.0
    W2[1, :, 0, 0] = 1.0
    W2[2, 2, 1, 1] = -1.0
    W2[3] = 2.0
    W3 = np.zeros((5, 16))  # columns 4c..4c+3 are channel c of the flattened 4×2×2 map
    W3[0, 0] = 1.0  # one column of channel 0
    W3[1, 4:8] = 1.0  # all of channel 1
    W3[2, [3, 15]] = 1.0  # channels 0 and 3
    W3[3, :] = 1.0
    W3[4, 9] = 1.0  # channel 2
    layers = [ro.Conv2d(W1, np.zeros(3), padding=1), ro.ReLU(), ro.MaxPool2d(2), ro.Conv2d(W2, np.zeros(4)), ro.ReLU(),
              ro.Flatten(), ro.Dense(W3, np.zeros(5))]
    return ro.Network(layers, input_shape=(2, 6, 6))


def test_structure_by_hand():
    net = _hand_network()
    assert net.n_layers == 3
    assert net.unit_counts == (2, 3, 4, 5)
    assert net.message_sizes == (36, 9, 4, 1)  # s_1 after the 2×2 pooling of a 6×6 map; s_2 = 2×2
    l1, l2, l3 = net.structure
    assert (l1.kind, l1.output_positions, l1.in_message_size) == ("conv2d", 36, 36)
    assert (l2.kind, l2.output_positions, l2.in_message_size) == ("conv2d", 4, 9)
    assert (l3.kind, l3.output_positions, l3.in_message_size) == ("dense", 1, 4)
    np.testing.assert_array_equal(l1.connectivity.toarray(), [[1, 0], [1, 1], [1, 1]])
    np.testing.assert_array_equal(l2.connectivity.toarray(), [[1, 0, 0], [1, 1, 1], [0, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(
        l3.connectivity.toarray(), [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 0]]
    )
    np.testing.assert_array_equal(l1.nnz_per_unit, [9, 18, 12])
    np.testing.assert_array_equal(l2.nnz_per_unit, [4, 3, 1, 12])
    np.testing.assert_array_equal(l3.nnz_per_unit, [1, 4, 2, 16, 1])
    np.testing.assert_array_equal(l1.flops_per_unit, [2 * 9 * 36 + 36, 2 * 18 * 36 + 36, 2 * 12 * 36 + 36])
    np.testing.assert_array_equal(l2.flops_per_unit, [2 * 4 * 4 + 4, 2 * 3 * 4 + 4, 2 * 1 * 4 + 4, 2 * 12 * 4 + 4])
    np.testing.assert_array_equal(l3.flops_per_unit, [3, 9, 5, 33, 3])
    np.testing.assert_array_equal(l1.params_per_unit, [10, 19, 13])
    np.testing.assert_array_equal(l3.params_per_unit, [2, 5, 3, 17, 2])
    assert net.shapes(1) == ((2, 6, 6), (3, 6, 6), (3, 3, 3))
    assert net.shapes(3) == ((4, 2, 2), (5,), (5,))


def test_flatten_rule_for_an_image_input():
    W = np.zeros((3, 8))
    W[0, 1] = W[1, 4] = W[2, [0, 7]] = 1.0
    net = ro.Network([ro.Flatten(), ro.Dense(W)], input_shape=(2, 2, 2))
    assert net.unit_counts == (2, 3) and net.message_sizes == (4, 1)
    np.testing.assert_array_equal(net.structure[0].connectivity.toarray(), [[1, 0], [0, 1], [1, 1]])


def test_dense_units_and_trace(rng):
    net = random_dense_network(rng, [5, 7, 3], density=0.4)
    assert net.unit_counts == (5, 7, 3) and net.message_sizes == (1, 1, 1)
    W = net.linear_layers[0].W
    np.testing.assert_array_equal(net.structure[0].connectivity.toarray(), W != 0)
    X = rng.normal(size=(4, 5))
    trace = net.trace(X)
    np.testing.assert_allclose(trace.pre_activations[0], X @ W.T + net.linear_layers[0].b, rtol=1e-14)
    np.testing.assert_array_equal(trace.activations[-1].reshape(4, -1), net.forward(X))
    assert [a.shape for a in trace.activations] == [(4, 5, 1), (4, 7, 1), (4, 3, 1)]


def test_with_weights_keeps_topology(rng):
    net = random_conv_network(rng)
    doubled = net.with_weights([(2 * layer.W, layer.b) for layer in net.linear_layers])
    assert [type(a) for a in doubled.layers] == [type(a) for a in net.layers]
    assert doubled.linear_layers[0].stride == net.linear_layers[0].stride
    np.testing.assert_array_equal(doubled.linear_layers[1].W, 2 * net.linear_layers[1].W)
    with pytest.raises(ro.InvalidProblemError, match="`weights` must hold 3 \\(W, b\\) pairs, got 1"):
        net.with_weights([(net.linear_layers[0].W, net.linear_layers[0].b)])
    with pytest.raises(ro.InvalidProblemError, match="`W` must have shape"):
        net.with_weights([(np.ones((1, 1)), np.ones(1))] * 3)


def test_weights_are_immutable_copies(rng):
    W = rng.normal(size=(3, 2))
    layer = ro.Dense(W)
    W[0, 0] = 100.0
    assert layer.W[0, 0] != 100.0
    with pytest.raises(ValueError):
        layer.W[0, 0] = 1.0


@pytest.mark.parametrize(
    ("layers", "shape", "message"),
    [
        ([ro.Conv2d(np.ones((2, 1, 3, 3))), ro.Flatten(), ro.Conv2d(np.ones((2, 2, 1, 1)))], (1, 5, 5),
         r"`layers\[2\]` \(Conv2d\) needs a \(channels, height, width\) input, but the layers before it produce a flat"),
        ([ro.Conv2d(np.ones((2, 1, 3, 3))), ro.Flatten(), ro.MaxPool2d(2), ro.Dense(np.ones((1, 18)))], (1, 5, 5),
         r"`layers\[2\]` \(MaxPool2d\) needs a \(channels, height, width\) input"),
        ([ro.Dense(np.ones((4, 3))), ro.MaxPool2d(2), ro.Dense(np.ones((1, 4)))], (3,), r"`layers\[1\]` \(MaxPool2d\)"),
        ([ro.Dense(np.ones((4, 3))), ro.ReLU()], (3,), "the network's output is its last linear layer's output"),
        ([ro.Dense(np.ones((4, 3))), ro.Dense(np.ones((2, 5)))], (3,), r"`layers\[1\]` \(Dense\) expects 5 inputs but receives 4"),
        ([ro.Conv2d(np.ones((2, 3, 3, 3)))], (1, 5, 5), "expects 3 input channels but receives 1"),
        ([ro.Conv2d(np.ones((2, 1, 7, 7)))], (1, 5, 5), "kernel larger than its padded 5x5 input"),
        ([ro.ReLU(), ro.Dense(np.ones((2, 3)))], (3,), r"`layers\[0\]` \(ReLU\) comes before the first linear layer"),
        ([ro.ReLU()], (3,), "`layers` must contain at least one Dense or Conv2d layer"),
        ([np.ones((2, 3))], (3,), r"`layers\[0\]` must be a repurpose_opt layer"),
        (ro.Dense(np.ones((2, 3))), (3,), "`layers` must be a sequence of repurpose_opt layers, got Dense"),
        ([ro.Dense(np.ones((2, 3)))], (3, 2), r"`input_shape` must be \(features,\) or \(channels, height, width\)"),
        ([ro.Dense(np.ones((2, 3)))], (0,), "`input_shape` must be >= 1, got 0"),
        ([ro.Dense(np.ones((2, 3)))], (2.5,), "`input_shape` must be an integer, got 2.5"),
    ],
)
def test_construction_refuses_malformed_networks(layers, shape, message):
    with pytest.raises(ro.InvalidProblemError, match=message):
        ro.Network(layers, input_shape=shape)


# ------------------------------------------------------------------------------------- persistence
def _every_layer_network(rng) -> ro.Network:
    layers = [
        ro.Conv2d(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), stride=(1, 2), padding=(1, 0)), ro.Tanh(),
        ro.AvgPool2d((2, 1), stride=(1, 1)), ro.Conv2d(rng.normal(size=(2, 3, 1, 1))), ro.Sigmoid(), ro.MaxPool2d(2),
        ro.Flatten(), ro.Dense(rng.normal(size=(4, 2 * 2 * 1))), ro.Identity(), ro.Dense(rng.normal(size=(3, 4)) * 1e-300),
    ]
    return ro.Network(layers, input_shape=(2, 6, 6))


def test_save_load_round_trip_is_bit_exact(tmp_path, rng):
    net = _every_layer_network(rng)
    path = net.save(tmp_path / "net")
    assert path.name == "net.npz" and path.exists()
    loaded = ro.Network.load(path)
    assert loaded.input_shape == net.input_shape
    assert [layer.to_config() for layer in loaded.layers] == [layer.to_config() for layer in net.layers]
    for a, b in zip(net.linear_layers, loaded.linear_layers, strict=True):
        assert a.W.dtype == b.W.dtype == np.float64
        assert a.W.tobytes() == b.W.tobytes() and a.b.tobytes() == b.b.tobytes()
    X = rng.normal(size=(3, 2, 6, 6))
    assert net.forward(X).tobytes() == loaded.forward(X).tobytes()
    with np.load(path, allow_pickle=False) as data:  # nothing in the file needs pickle
        assert all(data[key].dtype != object for key in data.files)
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file was renamed


def test_load_refuses_damaged_files(tmp_path, rng):
    net = random_dense_network(rng, [4, 5, 3])
    path = net.save(tmp_path / "net.npz")
    data = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ro.FormatError, match="is not a readable repurpose-opt/network file"):
        ro.Network.load(truncated)

    # Flip one byte inside the first weight array's data: the zip CRC or our checksum catches it.
    corrupted = tmp_path / "corrupted.npz"
    offset = data.find(net.linear_layers[0].W.tobytes()) + 17
    assert offset > 17
    flipped = bytearray(data)
    flipped[offset] ^= 0xFF
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(ro.FormatError, match="corrupted"):
        ro.Network.load(corrupted)

    # A well-formed archive whose arrays were changed after the checksum was taken.
    header, arrays = net.to_payload()
    tampered = tmp_path / "tampered.npz"
    _io.write_npz(tampered, "repurpose-opt/network", 1, header, arrays)
    with np.load(tampered) as archive:
        content = {key: archive[key] for key in archive.files}
    content["W0"] = content["W0"] + 1.0
    np.savez(tampered, **content)
    with pytest.raises(ro.FormatError, match="failed its checksum"):
        ro.Network.load(tampered)

    newer = tmp_path / "newer.npz"
    _io.write_npz(newer, "repurpose-opt/network", 2, header, arrays)
    with pytest.raises(ro.FormatError, match="format version 2; this repurpose-opt reads versions up to 1: upgrade"):
        ro.Network.load(newer)

    foreign = tmp_path / "foreign.npz"
    _io.write_npz(foreign, "repurpose-opt/solution", 1, {}, {})
    with pytest.raises(ro.FormatError, match="holds a 'repurpose-opt/solution' file, expected 'repurpose-opt/network'"):
        ro.Network.load(foreign)

    plain = tmp_path / "plain.npz"
    np.savez(plain, W=np.ones(3))
    with pytest.raises(ro.FormatError, match="has no repurpose-opt header"):
        ro.Network.load(plain)

    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ro.FormatError, match="not an .npz archive"):
        ro.Network.load(single)

    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ro.FormatError, match="is not a readable"):
        ro.Network.load(text)

    broken = tmp_path / "broken.npz"
    _io.write_npz(broken, "repurpose-opt/network", 1, {"input_shape": [4], "layers": [{"type": "lstm"}]}, {})
    with pytest.raises(ro.FormatError, match="malformed network description: unknown layer type 'lstm'"):
        ro.Network.load(broken)

    with pytest.raises(ro.FormatError, match="`path` must be an existing file"):
        ro.Network.load(tmp_path / "missing.npz")
