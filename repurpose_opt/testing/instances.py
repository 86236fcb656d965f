"""Tiny problems with known answers, and builders of random valid networks, for tests and conformance.

Every builder is deterministic in its ``seed``. The hand-made instances carry an optimum worked out by
hand (see each docstring); :func:`conformance_instances` also checks them against the brute-force oracle
in the package's own tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cluster import Cluster
from ..layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU
from ..network import Network
from ..problems import PartitionProblem, PruningProblem, RestructureProblem

__all__ = [
    "Instance",
    "random_dense_network",
    "random_conv_network",
    "planted_dense_network",
    "planted_conv_network",
    "conformance_instances",
    "relabel_workers",
]


@dataclass(frozen=True, eq=False)
class Instance:
    """A named problem and what is known about it.

    Attributes
    ----------
    name : str
    problem : PartitionProblem, PruningProblem or RestructureProblem
    optimum : float or None
        The optimal objective when known by construction (hand-made or planted); ``None``: ask the oracle
        (brute force), or nothing is known (restructuring).
    feasible : bool
        False when the instance has no feasible solution (known by construction).
    quick : bool
        Part of the quick subset of :func:`~repurpose_opt.testing.check_backend`.
    note : str
        Why the optimum is what it is.
    """

    name: str
    problem: object
    optimum: float | None = None
    feasible: bool = True
    quick: bool = False
    note: str = ""

    @property
    def problem_type(self) -> str:
        return type(self.problem).__name__


# ------------------------------------------------------------------------------------------ builders
def random_dense_network(rng: np.random.Generator, sizes: list[int], density: float = 0.5,
                         activation: type = ReLU, *, connected: bool = True) -> Network:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]`` with about ``density`` nonzero weights.

    With ``connected`` every unit keeps at least one nonzero weight, so no unit is disconnected.

    Examples
    --------
    >>> import numpy as np
    >>> random_dense_network(np.random.default_rng(0), [4, 6, 3]).unit_counts
    (4, 6, 3)
    """
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = rng.normal(size=(n_out, n_in)) * (rng.random((n_out, n_in)) < density)
        if connected:
            W[np.arange(n_out), rng.integers(0, n_in, n_out)] = rng.choice([-1.0, 1.0], n_out)
        layers += [Dense(W, rng.normal(size=n_out)), activation()]
    return Network(layers[:-1], input_shape=(sizes[0],))


def random_conv_network(rng: np.random.Generator, channels: tuple[int, int, int] = (2, 3, 4), size: int = 6,
                        dense_out: int = 3, density: float = 0.6, pool: bool = True) -> Network:
    """conv(c0→c1, 3×3, pad 1) → ReLU → [maxpool 2] → conv(c1→c2, 3×3, stride 1) → ReLU → Flatten → Dense.

    Kernels are zeroed per (output, input) channel pair with probability ``1 - density`` so that the
    connectivity is sparse at the channel level (which is what the placement sees).

    Examples
    --------
    >>> import numpy as np
    >>> net = random_conv_network(np.random.default_rng(0))
    >>> net.unit_counts, net.message_sizes
    ((2, 3, 4, 3), (36, 9, 1, 1))
    """
    c0, c1, c2 = channels

    def kernel(c_out: int, c_in: int) -> np.ndarray:
        mask = rng.random((c_out, c_in)) < density
        mask[np.arange(c_out), rng.integers(0, c_in, c_out)] = True
        return rng.normal(size=(c_out, c_in, 3, 3)) * mask[:, :, None, None]

    layers: list = [Conv2d(kernel(c1, c0), rng.normal(size=c1), padding=1), ReLU()]
    h = size
    if pool:
        layers.append(MaxPool2d(2))
        h = size // 2
    layers += [Conv2d(kernel(c2, c1), rng.normal(size=c2)), ReLU(), Flatten()]
    h = h - 2
    W = rng.normal(size=(dense_out, c2 * h * h))
    layers.append(Dense(W, rng.normal(size=dense_out)))
    return Network(layers, input_shape=(c0, size, size))


def planted_dense_network(rng: np.random.Generator, k: int, block_units: list[int], density: float = 0.6) -> Network:
    """Block-diagonal dense layers (block g of layer l reads only block g of layer l-1), units shuffled.

    Placing block g of every layer (the input included) on worker g sends nothing: with a free input and
    distributed outputs the optimal volume is 0.

    Examples
    --------
    >>> import numpy as np
    >>> planted_dense_network(np.random.default_rng(0), 2, [2, 3, 1]).unit_counts
    (4, 6, 2)
    """
    perms = [rng.permutation(k * b) for b in block_units]
    layers: list = []
    for l in range(1, len(block_units)):
        b_in, b_out = block_units[l - 1], block_units[l]
        W = np.zeros((k * b_out, k * b_in))
        for g in range(k):
            block = rng.normal(size=(b_out, b_in)) * (rng.random((b_out, b_in)) < density)
            block[np.arange(b_out), rng.integers(0, b_in, b_out)] = 1.0
            W[g * b_out:(g + 1) * b_out, g * b_in:(g + 1) * b_in] = block
        layers += [Dense(W[perms[l]][:, perms[l - 1]], rng.normal(size=k * b_out)), ReLU()]
    return Network(layers[:-1], input_shape=(k * block_units[0],))


def planted_conv_network(rng: np.random.Generator, k: int = 2) -> Network:
    """A conv → maxpool → flatten → dense network whose channel groups never mix, channels shuffled.

    Input: ``k`` channels of 4×4; conv ``k→2k`` (3×3, pad 1) where output channels of group g read only
    input channel g; ReLU; maxpool 2; Flatten; Dense ``2k·4 → k`` where unit g reads only group g's
    channels. With a free input and distributed outputs the optimal volume is 0.

    Examples
    --------
    >>> import numpy as np
    >>> net = planted_conv_network(np.random.default_rng(0))
    >>> net.unit_counts, net.message_sizes
    ((2, 4, 2), (16, 4, 1))
    """
    c_in, c_mid, out = k, 2 * k, k
    p_in, p_mid, p_out = rng.permutation(c_in), rng.permutation(c_mid), rng.permutation(out)
    K1 = np.zeros((c_mid, c_in, 3, 3))
    W2 = np.zeros((out, c_mid, 4))
    for g in range(k):
        K1[2 * g:2 * g + 2, g] = rng.normal(size=(2, 3, 3))
        W2[g, 2 * g:2 * g + 2] = rng.normal(size=(2, 4))
    K1 = K1[p_mid][:, p_in]
    W2 = W2[p_out][:, p_mid]
    layers = [Conv2d(K1, rng.normal(size=c_mid), padding=1), ReLU(), MaxPool2d(2), Flatten(),
              Dense(W2.reshape(out, -1), rng.normal(size=out))]
    return Network(layers, input_shape=(c_in, 4, 4))


def relabel_workers(assignment: tuple[np.ndarray, ...], permutation: np.ndarray) -> tuple[np.ndarray, ...]:
    """The assignment with worker ``w`` renamed ``permutation[w]`` (replicated inputs, -1, stay -1).

    Examples
    --------
    >>> import numpy as np
    >>> [a.tolist() for a in relabel_workers((np.array([-1, -1]), np.array([0, 1, 1])), np.array([1, 0]))]
    [[-1, -1], [1, 0, 0]]
    """
    permutation = np.asarray(permutation, dtype=np.int64)
    return tuple(np.where(a < 0, a, permutation[np.maximum(a, 0)]).astype(np.int64) for a in assignment)


# ------------------------------------------------------------------------------------ the instances
def _hand_made() -> list[Instance]:
    out = []
    eye = np.eye(4)
    net = Network([Dense(eye), ReLU(), Dense(eye)], input_shape=(4,))
    out.append(Instance(
        "identity-free", PartitionProblem(net, Cluster(k=2), input_placement="free", output="distributed"),
        optimum=0.0, quick=True,
        note="unit i of every layer reads only unit i of the layer before: put all the i's together",
    ))
    net = Network([Dense(np.ones((4, 4))), ReLU(), Dense(np.ones((2, 4)))], input_shape=(4,))
    out.append(Instance(
        "dense-gather", PartitionProblem(net, Cluster(k=2), input_placement="replicated", output="gather"),
        optimum=5.0, quick=True,
        note="balance splits the 2 outputs 1/1, so each of the 4 hidden units is read on both workers (4 "
             "scalars), and the output on worker 1 is gathered (1 scalar)",
    ))
    P = eye[[2, 0, 3, 1]]
    net = Network([Dense(P), ReLU(), Dense(P)], input_shape=(4,))
    out.append(Instance(
        "sensor-fixed", PartitionProblem(net, Cluster(k=2), input_placement=np.array([0, 0, 1, 1]),
                                         output="distributed"),
        optimum=0.0, quick=True,
        note="a permutation network: each unit follows the one unit it reads, from the fixed input on",
    ))
    net = Network([Dense(np.ones((2, 3))), ReLU(), Dense(np.ones((2, 2)))], input_shape=(3,))
    out.append(Instance(
        "k1-gather", PartitionProblem(net, Cluster(k=1), input_placement="free", output="gather"),
        optimum=0.0, quick=True, note="one worker sends nothing",
    ))
    # Total FLOPs = 4·(2·4+1) + 2·(2·4+1) = 54; a 20-FLOP cap per worker on 2 workers cannot hold them.
    net = Network([Dense(np.ones((4, 4))), ReLU(), Dense(np.ones((2, 4)))], input_shape=(4,))
    out.append(Instance(
        "infeasible-flops", PartitionProblem(net, Cluster(k=2, flops_capacity=20.0)),
        feasible=False, quick=True, note="54 FLOPs in all, at most 2 x 20 allowed",
    ))
    return out


def _generated() -> list[Instance]:
    rng = np.random.default_rng(20240601)
    out = [
        Instance("planted-dense", PartitionProblem(planted_dense_network(rng, 3, [1, 2, 1]), Cluster(k=3),
                                                   input_placement="free", output="distributed"),
                 optimum=0.0, note="block-diagonal layers, units shuffled"),
        Instance("planted-conv", PartitionProblem(planted_conv_network(rng, 2), Cluster(k=2),
                                                  input_placement="free", output="distributed"),
                 optimum=0.0, quick=True, note="channel groups never mix (conv + maxpool + flatten + dense)"),
    ]
    net = random_dense_network(rng, [3, 4, 2], density=0.5)
    out.append(Instance("random-gather", PartitionProblem(net, Cluster(k=2), input_placement="replicated",
                                                          output="gather"), note="optimum by the oracle"))
    net = random_dense_network(rng, [4, 4, 3], density=0.5)
    out.append(Instance("random-fixed-k3", PartitionProblem(net, Cluster(k=3), input_placement=np.array([0, 1, 2, 0]),
                                                            output="distributed"), note="optimum by the oracle"))
    net = random_dense_network(rng, [4, 5, 2], density=0.6)
    out.append(Instance("speeds-imbalance", PartitionProblem(net, Cluster(k=2, speed=[2.0, 1.0]), input_placement="free",
                                                             output="gather", imbalance=0.1),
                        note="optimum by the oracle"))
    net = random_dense_network(rng, [3, 4, 2], density=0.7)
    out.append(Instance("latency", PartitionProblem(net, Cluster(k=2, bandwidth=1e4, latency=1e-5, flop_rate=1e6),
                                                    input_placement="free", output="gather", objective="latency"),
                        note="α-β latency objective; optimum by the oracle"))
    net = random_conv_network(rng, channels=(1, 2, 2), size=6, dense_out=2)
    out.append(Instance("conv-gather", PartitionProblem(net, Cluster(k=2), input_placement="replicated", output="gather"),
                        note="conv + maxpool + flatten; optimum by the oracle"))
    return out


def _pruning() -> list[Instance]:
    rng = np.random.default_rng(7)
    layer = Dense(rng.normal(size=(4, 6)))
    X = rng.normal(size=(40, 6))
    Y = layer.apply(X)
    exact = PruningProblem(X, Y, layer, [0, 0, 1, 1], Cluster(k=2), input_placement=[0, 0, 0, 1, 1, 1], tolerance=0.0)
    budget = PruningProblem(X, Y, layer, [0, 0, 1, 1], Cluster(k=2), input_placement=[0, 0, 0, 1, 1, 1], comm_budget=2.0)
    return [
        Instance("pruning-exact-fit", exact, optimum=6.0, quick=True,
                 note="dense random weights: an exact fit needs all 3 remote inputs on both workers"),
        Instance("pruning-budget", budget, note="relative error under a 2-scalar budget; optimum by the oracle"),
    ]


def _restructure() -> list[Instance]:
    rng = np.random.default_rng(11)
    net = random_dense_network(rng, [6, 8, 4], density=0.7)
    X = rng.normal(size=(64, 6))
    return [
        Instance("restructure-tol", RestructureProblem(net, Cluster(k=2), calibration=X, tolerance=0.1), quick=True,
                 note="10 % calibration tolerance per layer"),
        Instance("restructure-k1", RestructureProblem(net, Cluster(k=1), calibration=X, tolerance=0.0,
                                                      output="gather"),
                 optimum=0.0, quick=True, note="one worker: nothing to send, nothing to prune"),
    ]


def conformance_instances(problem_type: str | None = None, *, quick: bool = False) -> list[Instance]:
    """The conformance suite's instances, optionally of one problem type and/or the quick subset only.

    Examples
    --------
    >>> [i.name for i in conformance_instances("PartitionProblem", quick=True)]
    ['identity-free', 'dense-gather', 'sensor-fixed', 'k1-gather', 'infeasible-flops', 'planted-conv']
    """
    instances = _hand_made() + _generated() + _pruning() + _restructure()
    return [
        inst for inst in instances
        if (problem_type is None or inst.problem_type == problem_type) and (inst.quick or not quick)
    ]
