"""Partition a sparse digits MLP for K workers with every installed partition backend.

A dense network cannot be partitioned usefully (every balanced placement sends the same volume), so this
example keeps the largest 10 % of each layer's weights first, then compares the installed backends with
the direct contiguous split on the comparison study's meter.

    python examples/partition_digits.py [K] [--time-limit SECONDS] [--quick]

``--quick`` (or the environment variable ``REPURPOSE_OPT_QUICK=1``, which CI sets) gives every backend
1 second instead of 10: too short for the exact backends, which then report NO_SOLUTION or a weak bound
(their warm start alone takes a tenth of the limit).
"""

import argparse
import os

import repurpose_opt as ro
from repurpose_opt.studies import compare, format_summary, parse_instance, summarize

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("k", nargs="?", type=int, default=4, help="number of workers (default: 4)")
parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per backend (default: 10)")
parser.add_argument("--quick", action="store_true", help="1 second per backend (also: REPURPOSE_OPT_QUICK=1)")
args = parser.parse_args()
time_limit = 1.0 if args.quick or os.environ.get("REPURPOSE_OPT_QUICK") == "1" else args.time_limit

instance = parse_instance(f"digits_mlp:keep=0.1:k={args.k}")    # replicated input, outputs gathered on worker 0
backends = [row["name"] for row in ro.list_backends(available_only=True)
            if "PartitionProblem" in row["problems"] and row["name"] != "bruteforce"]   # the oracle is for tiny cases
rows = compare([instance], backends, time_limit=time_limit, seeds=[0], progress=False)
print(format_summary(summarize(rows)))

best = min((r for r in rows if r["volume"] is not None), key=lambda r: r["volume"])
print(f"\nbest: {best['backend']} sends {best['volume']:g} scalars per sample, "
      f"{best['direct_volume'] / best['volume']:.2f}x less than the direct split ({best['direct_volume']:g})")
