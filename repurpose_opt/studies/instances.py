"""Instances for the studies: pruned shipped models, random sparse layered networks, planted networks.

Three generators, plus a small text format so the command line can name an instance:

- :func:`pruned_model`: a model from :mod:`repurpose_opt.zoo` with, in every linear layer, only its largest
  ``keep`` fraction of weights (by magnitude) left nonzero. Pruning is per layer, not global, so every layer
  keeps the same share of its weights and none is emptied; biases are kept. This is how sparse real
  networks with non-trivial partitions are made from the dense shipped ones (on a dense network every
  placement that gives each worker a unit of each layer sends the same volume).
- :func:`random_network`: a dense-input layered network whose weights are nonzero independently with
  probability ``density`` (ReLU between layers).
- :func:`planted_network`: K hidden blocks per layer, weights only inside a block (layer l's block b reads
  layer l-1's block b), then the units of every layer, the input included, shuffled. The planted placement
  is balanced and sends nothing, so with ``input_placement="free"`` and ``output="distributed"`` volume 0
  is optimal and a backend must rediscover the hidden blocks to reach it.

Instance specs (``repurpose-opt compare --instances ...``) are ``KIND[:key=value]...``:

==================================  ==========================================================================
kind                                keys (defaults)
==================================  ==========================================================================
``digits_mlp``, ``digits_cnn``,     ``keep`` (0.1; a fraction or a percentage like ``10%``), ``k`` (4),
``mnist1d_mlp``                     ``input`` (replicated), ``output`` (gather), ``imbalance`` (0)
``random``                          ``units`` (64-128-64-10), ``density`` (0.1), ``seed`` (0), ``k`` (4),
                                    ``input`` (replicated), ``output`` (gather), ``imbalance`` (0)
``planted``                         ``units`` (24-24-24-12), ``density`` (0.5, inside blocks), ``seed`` (0),
                                    ``k`` (3), ``input`` (free), ``output`` (distributed), ``imbalance`` (0)
==================================  ==========================================================================

Examples
--------
>>> from repurpose_opt.studies.instances import parse_instance
>>> inst = parse_instance("planted:units=8-8-4:k=2:seed=1")
>>> inst.name, inst.problem.network.unit_counts, inst.problem.input_placement, inst.problem.output
('planted:units=8-8-4:k=2:seed=1', (8, 8, 4), 'free', 'distributed')
>>> import repurpose_opt as ro
>>> ro.simulate(inst.problem.network, list(inst.planted), inst.problem.cluster, output="distributed").comm_scalars
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import as_choice, as_float, as_int
from ..cluster import Cluster
from ..errors import InvalidParameterError
from ..layers import Dense, ReLU
from ..network import Network
from ..problems import PartitionProblem

__all__ = [
    "Instance",
    "pruned_model",
    "prune_network",
    "random_network",
    "planted_network",
    "parse_instance",
    "INSTANCE_KINDS",
]

ZOO_KINDS = ("digits_mlp", "digits_cnn", "mnist1d_mlp")
INSTANCE_KINDS = ZOO_KINDS + ("random", "planted")

_COMMON = {"k": None, "input": None, "output": None, "imbalance": "0"}
_DEFAULTS: dict[str, dict[str, str | None]] = {
    **{kind: {"keep": "0.1", **_COMMON, "k": "4", "input": "replicated", "output": "gather"} for kind in ZOO_KINDS},
    "random": {"units": "64-128-64-10", "density": "0.1", "seed": "0", **_COMMON, "k": "4", "input": "replicated",
               "output": "gather"},
    "planted": {"units": "24-24-24-12", "density": "0.5", "seed": "0", **_COMMON, "k": "3", "input": "free",
                "output": "distributed"},
}


@dataclass(frozen=True, eq=False)
class Instance:
    """A named problem for a study; ``planted`` is the hidden zero-volume assignment of a planted instance."""

    name: str
    problem: Any
    description: str = ""
    planted: tuple[np.ndarray, ...] | None = None


def prune_network(network: Network, keep: float) -> Network:
    """``network`` with, in every linear layer, only its largest ``keep`` fraction of weights kept.

    Ties at the threshold are broken by index, so exactly ``ceil(keep · size)`` weights stay (at least one).

    Examples
    --------
    >>> import numpy as np, repurpose_opt as ro
    >>> net = ro.Network([ro.Dense(np.arange(1.0, 11.0).reshape(2, 5))], input_shape=(5,))
    >>> prune_network(net, 0.3).linear_layers[0].W.tolist()
    [[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 8.0, 9.0, 10.0]]
    """
    keep = as_float("keep", keep, strictly_positive=True, maximum=1.0)
    weights = []
    for layer in network.linear_layers:
        W = np.asarray(layer.W)
        flat = np.abs(W).ravel()
        n_keep = max(1, int(np.ceil(keep * flat.size - 1e-9)))
        kept = np.argpartition(-flat, n_keep - 1)[:n_keep] if n_keep < flat.size else np.arange(flat.size)
        mask = np.zeros(flat.size, dtype=bool)
        mask[kept] = True
        weights.append((np.where(mask.reshape(W.shape), W, 0.0), np.asarray(layer.b)))
    return network.with_weights(weights)


def pruned_model(name: str, keep: float = 0.1) -> Network:
    """The zoo model ``name`` pruned by :func:`prune_network` (largest ``keep`` fraction of each layer)."""
    from .. import zoo

    return prune_network(zoo.load(name).network, keep)


def _units(name: str, units: Sequence[int]) -> tuple[int, ...]:
    try:
        counts = tuple(as_int(name, u, minimum=1) for u in units)
    except TypeError as exc:
        raise InvalidParameterError(f"`{name}` must be a sequence of positive integers, got {units!r}") from exc
    if len(counts) < 2:
        raise InvalidParameterError(f"`{name}` must list at least 2 layer sizes (input and output), got {list(counts)}")
    return counts


def random_network(units: Sequence[int] = (64, 128, 64, 10), density: float = 0.1, seed: int = 0) -> Network:
    """A layered network ``units[0] → … → units[-1]`` (ReLU between) with each weight nonzero w.p. ``density``.

    Examples
    --------
    >>> net = random_network((20, 30, 5), density=0.2, seed=0)
    >>> net.unit_counts, round(float((net.linear_layers[0].W != 0).mean()), 1)
    ((20, 30, 5), 0.2)
    """
    units = _units("units", units)
    density = as_float("density", density, strictly_positive=True, maximum=1.0)
    rng = _generator("random", seed)
    layers: list[Any] = []
    for l, (n_in, n_out) in enumerate(zip(units[:-1], units[1:], strict=True)):
        mask = rng.random((n_out, n_in)) < density
        W = rng.normal(size=(n_out, n_in)) * mask / np.sqrt(max(density * n_in, 1.0))
        layers.append(Dense(W, 0.1 * rng.normal(size=n_out)))
        if l < len(units) - 2:
            layers.append(ReLU())
    return Network(layers, input_shape=(units[0],))


def _generator(kind: str, seed: Any) -> np.random.Generator:
    # Keyed by the generator's kind: a backend seeded like the instance (say random with seed 0 drawing the
    # same permutations) must not recover a planted placement by sharing its random stream.
    return np.random.default_rng([as_int("seed", seed, minimum=0), *kind.encode()])


def _blocks(n: int, k: int) -> np.ndarray:
    # Sizes differ by at most one, so every block fits the balance capacity ⌈n/k⌉.
    return np.repeat(np.arange(k), [n // k + (b < n % k) for b in range(k)])


def planted_network(units: Sequence[int] = (24, 24, 24, 12), k: int = 3, density: float = 0.5,
                    seed: int = 0) -> tuple[Network, tuple[np.ndarray, ...]]:
    """A network whose units hide K blocks that never talk to each other, and that hidden placement.

    Every unit reads at least one input of its own block (and only of its block); then every layer's
    units, the input's included, are shuffled. Returns ``(network, placement)`` where ``placement[l]`` is
    the hidden block of each unit of layer l (index 0 = the input); it is balanced and sends nothing, so
    volume 0 is optimal with a free input placement and distributed outputs.

    Examples
    --------
    >>> import repurpose_opt as ro
    >>> net, hidden = planted_network((6, 6, 4), k=2, seed=0)
    >>> ro.simulate(net, list(hidden), ro.Cluster(k=2), output="distributed").comm_scalars
    0.0
    """
    units = _units("units", units)
    k = as_int("k", k, minimum=1)
    if min(units) < k:
        raise InvalidParameterError(f"`units` must all be >= `k` ({k}) so that every block is non-empty, got {list(units)}")
    density = as_float("density", density, strictly_positive=True, maximum=1.0)
    rng = _generator("planted", seed)
    blocks = [_blocks(n, k) for n in units]
    perms = [rng.permutation(n) for n in units]  # new position q holds old unit perms[l][q]
    layers: list[Any] = []
    for l in range(1, len(units)):
        same = blocks[l][:, None] == blocks[l - 1][None, :]
        mask = same & (rng.random(same.shape) < density)
        # Guarantee each unit one input of its own block, so no unit is a constant.
        rows = np.arange(units[l])
        own = [np.flatnonzero(blocks[l - 1] == b) for b in range(k)]
        mask[rows, [rng.choice(own[b]) for b in blocks[l]]] = True
        W = rng.normal(size=same.shape) * mask / np.sqrt(max(density * units[l - 1] / k, 1.0))
        W = W[perms[l]][:, perms[l - 1]]
        layers.append(Dense(W, 0.1 * rng.normal(size=units[l])[perms[l]]))
        if l < len(units) - 1:
            layers.append(ReLU())
    placement = tuple(blocks[l][perms[l]].astype(np.int64) for l in range(len(units)))
    return Network(layers, input_shape=(units[0],)), placement


# --------------------------------------------------------------------------------------------- specs
def _parse_fields(spec: str) -> tuple[str, dict[str, str]]:
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidParameterError(f"`instance` must be a spec like 'planted:k=3' or 'digits_mlp:keep=0.1', got {spec!r}")
    kind, *fields = spec.strip().split(":")
    if kind not in INSTANCE_KINDS:
        raise InvalidParameterError(f"`instance` kind must be one of {', '.join(INSTANCE_KINDS)}, got {kind!r} in {spec!r}")
    values: dict[str, str] = {}
    for field in fields:
        key, sep, value = field.partition("=")
        if not sep or not key or not value:
            raise InvalidParameterError(f"`instance` fields must look like key=value, got {field!r} in {spec!r}")
        if key not in _DEFAULTS[kind]:
            raise InvalidParameterError(
                f"`instance` key {key!r} is not valid for {kind!r}; valid keys: {', '.join(_DEFAULTS[kind])}"
            )
        values[key] = value
    return kind, values


def _number(key: str, text: str, spec: str) -> float:
    try:
        return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise InvalidParameterError(f"`{key}` must be a number in {spec!r}, got {text!r}") from None


def _integer(key: str, text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidParameterError(f"`{key}` must be an integer in {spec!r}, got {text!r}") from None


def parse_instance(spec: str) -> Instance:
    """Build the :class:`Instance` a spec names (see the module docstring); its name is the spec itself.

    The problem is a :class:`~repurpose_opt.PartitionProblem` on a cluster of identical workers.
    """
    kind, given = _parse_fields(spec)
    values = {**_DEFAULTS[kind], **given}
    k = _integer("k", values["k"], spec)
    input_placement = as_choice("input", values["input"], ("replicated", "free"))
    output = as_choice("output", values["output"], ("gather", "distributed"))
    imbalance = _number("imbalance", values["imbalance"], spec)
    planted = None
    if kind in ZOO_KINDS:
        keep = _number("keep", values["keep"], spec)
        network = pruned_model(kind, keep)
        description = f"{kind} keeping its largest {100 * keep:g}% weights per layer"
    else:
        try:
            units = tuple(int(u) for u in values["units"].split("-"))
        except ValueError:
            raise InvalidParameterError(f"`units` must be sizes joined by '-', like 64-128-10, got {values['units']!r}") from None
        density = _number("density", values["density"], spec)
        seed = _integer("seed", values["seed"], spec)
        if kind == "random":
            network = random_network(units, density, seed)
            description = f"random layered network {values['units']}, density {density:g}, seed {seed}"
        else:
            network, planted = planted_network(units, k, density, seed)
            description = f"planted {k} blocks in {values['units']}, density {density:g} inside blocks, seed {seed}"
    problem = PartitionProblem(network, Cluster(k=k), input_placement=input_placement, output=output, imbalance=imbalance)
    return Instance(spec.strip(), problem, description, planted)
