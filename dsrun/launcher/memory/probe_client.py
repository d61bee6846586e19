"""Ask `python -m dsrun.probe` about a --model: the launcher itself never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

from dsrun.errors import UsageError

PROBE_TIMEOUT = 600.0  # seconds; building a large model's modules on the meta device is quick, importing it may not be


def check_model_spec(spec: str) -> None:
    """Refuse a malformed --model before starting a process for it."""
    module, _, factory = spec.rpartition(":")
    if not module or not factory or not factory.isidentifier():
        raise UsageError(f"--model {spec!r}: write MODULE:FACTORY, e.g. mymodels:build_gpt or models.py:build")


def check_input_spec(text: str) -> None:
    """'4x512:int64,4x512': shapes of the micro-batch's positional inputs (dtype names are checked by the probe)."""
    for item in text.split(","):
        shape = item.strip().partition(":")[0]
        if not shape or not all(d.strip().isdigit() and int(d) > 0 for d in shape.lower().split("x")):
            raise UsageError(f"--model-input {text!r}: write shapes like 4x512:int64 (batch 4, 512 tokens), several"
                             " separated by commas")


def probe(spec: str, inputs: str | None, dtype: str, unit_elements: int, python: str = sys.executable) -> dict:
    command = [python, "-m", "dsrun.probe", spec, "--dtype", dtype, "--unit-elements", str(unit_elements)]
    if inputs:
        command += ["--input", inputs]
    try:
        # `python -m` puts the working directory on sys.path: MODULE is found from here, as `import MODULE` would be.
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise UsageError(f"--model {spec}: the model probe (python -m dsrun.probe) took more than"
                         f" {PROBE_TIMEOUT:.0f} s") from None
    except OSError as err:
        raise UsageError(f"--model {spec}: could not start the model probe with {python}: {err}") from None
    last_error = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "")
    if done.returncode == 2 and last_error.startswith("error: "):
        raise UsageError(last_error.removeprefix("error: "))
    if done.returncode != 0:
        raise UsageError(f"--model {spec}: the model probe (python -m dsrun.probe) failed with exit code"
                         f" {done.returncode}: {last_error or 'no message'}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UsageError(f"--model {spec}: the model probe (python -m dsrun.probe) printed no result; the factory's"
                         " module may print to stdout and exit") from None
