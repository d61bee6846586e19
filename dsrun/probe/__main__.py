"""`python -m dsrun.probe MODULE:FACTORY [--input SHAPES] [--dtype D] [--unit-elements N]`: one JSON line.

What dsrun's dry run asks about a model (see dsrun/launcher/memory/probe_client.py): built on the meta device, so
a 70B-parameter model costs no memory. A user's mistake (the factory, the input shapes, a forward that fails on
meta tensors) is one line on stderr and exit code 2; a failure of the probe itself is Python's traceback and exit
code 1, which the dry run reports with the traceback's last line.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsrun.probe")
    parser.add_argument("model")
    parser.add_argument("--input", default=None, help="micro-batch input shapes, e.g. 4x512:int64")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--unit-elements", type=int, default=50_000_000)
    args = parser.parse_args(argv)

    from dsrun.errors import UsageError

    try:
        return _probe(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _probe(args: argparse.Namespace) -> int:
    from dsrun.errors import UsageError
    from dsrun.probe.activations import saved_bytes
    from dsrun.probe.model import DTYPES, build_on_meta, describe, example_inputs
    from dsrun.runtime.strategies.fully_sharded import block_runs, group_units

    dtype = DTYPES[args.dtype]
    model = build_on_meta(args.model, dtype)
    runs = block_runs(model)
    blocks = [block for run in runs for block in run]
    result = describe(model, blocks, group_units(runs, args.unit_elements))
    result["activations"] = None
    if args.input:
        model.train()
        inputs = example_inputs(args.input, dtype)
        try:
            result["activations"] = saved_bytes(model, inputs, blocks)
        except Exception as err:  # noqa: BLE001 - the user's forward, run on meta tensors, may not support them
            first = str(err).splitlines()[0] if str(err) else ""
            raise UsageError(f"--model {args.model}: the forward on meta tensors failed: {type(err).__name__}:"
                             f" {first}") from None
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
