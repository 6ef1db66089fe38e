"""Run one simulator seed from the command line and print what happened.

    python -m tests.sim.cli 153 --level host [--trace] [--safety-ms 2000]

Prints the run's stats and trace digest (the replay fingerprint); ``--trace``
prints every notable event (not ticks, iterations, deliveries or client calls). Exits 1 with
the failure report when the seed fails. Owns nothing but argument handling.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from .level1 import CoreLevel
from .level2 import HostLevel
from .simulator import Level, SimulationFailure, Simulator
from .trace import Trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed", type=int)
    parser.add_argument("--level", choices=("host", "core"), default="host")
    parser.add_argument("--safety-ms", type=int, default=2_000)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"fastpaca-sim-{args.seed}-") as directory:

        def level(sim: Simulator) -> Level:
            return HostLevel(sim, directory) if args.level == "host" else CoreLevel(sim)

        sim = Simulator(args.seed, level, safety_ms=args.safety_ms)
        if args.trace:
            sim.trace = Trace(tail_lines=10**7)
        try:
            result = sim.run()
        except SimulationFailure as failure:
            print(failure, file=sys.stderr)
            return 1
        finally:
            if args.trace:
                print("\n".join(sim.trace.notable()))
    print(f"seed {result.seed} ({result.level}): converged at {result.converged_at_ms} ms")
    print(f"stats {result.stats}")
    print(f"digest {result.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
