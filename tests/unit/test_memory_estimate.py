"""The dry run's memory estimate without torch: the per-stage arithmetic, the flags' numbers, the fits verdicts and
the `memory` object of `dsrun --dry-run --model-params` (the --model probe is tested in tests/e2e)."""

import json
from pathlib import Path

import pytest

from dsrun.cli.launch import main
from dsrun.errors import UsageError
from dsrun.launcher.memory import device_memory
from dsrun.launcher.memory.device_memory import NodeMemory
from dsrun.launcher.memory.estimate import _verdicts
from dsrun.launcher.memory.model_state import TrainingShape, estimate, optimizer_states
from dsrun.launcher.memory.sizes import parse_bytes, parse_count, show_bytes
from dsrun.launcher.plan.devices import LocalDevices
from dsrun.launcher.plan.world import LaunchSpec, build_plan

REPO = Path(__file__).resolve().parents[2]
NOOP = str(REPO / "examples" / "noop.py")
PSI = 8_000_000_000  # large enough that the step buffer's 65536-element floor does not matter
GiB = 2**30


def per_param(stage, precision="fp32", n=4, **kwargs):
    args = {"optimizer": "adamw", "optimizer_states": 2, "offload": False, "accelerator": "cuda",
            "data_parallel": n, **kwargs}
    return estimate(TrainingShape(stage, precision, **args), PSI)


@pytest.mark.parametrize("stage,fp32,bf16", [
    # fp32: 4 weights + 4 grads + 8 Adam moments; bf16: 2 + 2 + 4 master + 8 moments + the step's fp32 chunk 4/16
    (0, 16, 2 + 2 + 12 + 4 / 16),
    (1, 4 + 4 + 8 / 4, 2 + 2 + (12 + 4 / 16) / 4),
    (2, 4 + 12 / 4, 2 + (2 + 12 + 4 / 16) / 4),
    (3, 16 / 4, 16 / 4),  # FSDP2 keeps fp32 shards whatever the compute dtype
])
def test_bytes_per_parameter_of_each_stage(stage, fp32, bf16):
    assert per_param(stage).total / PSI == pytest.approx(fp32)
    assert per_param(stage, "bf16").total / PSI == pytest.approx(bf16)
    assert per_param(stage).host == 0 and per_param(stage).device == per_param(stage).total


def test_parts_and_formula():
    state = per_param(2, "bf16")
    assert (state.params, state.grads, state.masters, state.optimizer) == (2 * PSI, 2 * PSI // 4, PSI, 2 * PSI)
    assert state.step_transient == 4 * PSI // 4 // 16
    assert state.formula == "2Ψ + (2Ψ + 4Ψ + 8Ψ)/N + 4Ψ/16N while stepping"
    assert per_param(3).formula == "(4Ψ + 4Ψ + 8Ψ)/N"
    assert per_param(0).formula == "4Ψ + 4Ψ + 8Ψ"


def test_offload_moves_optimizer_and_masters_to_the_host_on_gpus():
    state = per_param(2, offload=True)
    # An fp32 model gets an fp32 master copy on the host, and the moments go there too.
    assert state.host == state.masters + state.optimizer + state.step_transient
    assert state.masters == 4 * PSI // 4 and state.device == state.params + state.grads
    stage3 = per_param(3, offload=True)
    assert stage3.device == 0 and stage3.host == stage3.total  # FSDP2's CPU offload: shards and grads too
    assert per_param(0, offload=True) == per_param(0)  # stage 0 has nothing to offload
    on_cpu = per_param(2, offload=True, accelerator="cpu")
    assert on_cpu.host == 0 and on_cpu.total == per_param(2, accelerator="cpu").total


def test_pipeline_stages_split_the_parameters_and_the_world():
    piped = estimate(TrainingShape(1, "fp32", "adamw", 2, False, "cuda", data_parallel=2, pipeline_stages=4), PSI)
    alone = estimate(TrainingShape(1, "fp32", "adamw", 2, False, "cuda", data_parallel=2), PSI // 4)
    assert piped == alone


def test_frozen_parameters_are_weights_only():
    shape = TrainingShape(2, "bf16", "adamw", 2, False, "cuda", data_parallel=4)
    assert estimate(shape, PSI, frozen=PSI).total == estimate(shape, PSI).total + 2 * PSI
    sharded = TrainingShape(3, "bf16", "adamw", 2, False, "cuda", data_parallel=4)
    assert estimate(sharded, PSI, frozen=PSI).params == estimate(sharded, PSI).params + 4 * PSI // 4


def test_optimizer_state_counts():
    assert optimizer_states("SGD", {"momentum": 0.9}) == 1 and optimizer_states("sgd", {}) == 0
    assert optimizer_states("Adam", {"amsgrad": True}) == 3 and optimizer_states("Lamb", {}) == 2
    assert optimizer_states("RMSprop", {"momentum": 0.9, "centered": True}) == 3
    assert optimizer_states("LBFGS", {}) is None
    sgd = per_param(0, optimizer="sgd", optimizer_states=0)
    assert sgd.optimizer == 0 and sgd.total == 8 * PSI
    o3 = per_param(0, "amp-O3")  # pure fp16: no masters, fp16 moments, nothing to convert
    assert o3.total == (2 + 2 + 4) * PSI and o3.masters == 0


@pytest.mark.parametrize("text,count", [("7e9", 7 * 10**9), ("7B", 7 * 10**9), ("1.3b", 1_300_000_000),
                                        ("350M", 350 * 10**6), ("70_000_000", 70_000_000), ("125k", 125_000)])
def test_parse_count(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize("text,size", [("80GiB", 80 * GiB), ("80G", 80 * GiB), ("80GB", 80 * 10**9),
                                       ("81920MiB", 80 * GiB), ("1024", 1024), ("1.5TiB", 1536 * GiB)])
def test_parse_bytes(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["seven", "7X", "0", "-1", "", "7 B B", "nan", "inf", "0.1", "1e-3", "1e400"])
def test_bad_numbers_are_usage_errors(text):
    with pytest.raises(UsageError, match="--model-params"):
        parse_count(text)
    with pytest.raises(UsageError, match="--device-memory"):
        parse_bytes(text)


def test_show_bytes():
    assert show_bytes(80 * GiB) == "80.0 GiB" and show_bytes(130 * GiB) == "130 GiB" and show_bytes(12) == "12 B"


def node(host, ranks=8, device=80 * GiB, ram=512 * GiB, local=False):
    return NodeMemory(host, ranks, device, ram, local)


def test_gpu_verdicts_check_one_gpu_and_the_node_ram_for_offload():
    fits = _verdicts([node("a"), node("b")], device=70 * GiB, host=10 * GiB, lean_device=70 * GiB,
                     accelerator="cuda")
    assert [(v["where"], v["fits"], v["hosts"]) for v in fits] == [("GPU", True, ["a", "b"]),
                                                                  ("host RAM", True, ["a", "b"])]
    assert fits[1]["needs"] == 8 * 10 * GiB  # eight ranks' offloaded state share the node's RAM
    short = _verdicts([node("a"), node("b", device=40 * GiB)], 70 * GiB, 0, 70 * GiB, "cuda")
    assert [(v["fits"], v["hosts"], v["has"]) for v in short] == [(True, ["a"], 80 * GiB), (False, ["b"], 40 * GiB)]


def test_verdicts_unknown_and_checkpointing_and_cpu_nodes():
    unknown = _verdicts([node("far", device=None), node("here", device=None, local=True)], GiB, 0, GiB, "cuda")
    assert [v["fits"] for v in unknown] == [None, None]
    assert unknown[0]["unknown_because"] == "remote host, not contacted: give --device-memory"
    assert unknown[1]["unknown_because"].startswith("nvidia-smi gave no memory")
    lean = _verdicts([node("a")], 90 * GiB, 0, 60 * GiB, "cuda")
    assert lean[0]["fits"] is False and lean[0]["with_checkpointing"] is True
    cpu = _verdicts([node("a", ranks=4, device=None, ram=16 * GiB)], 3 * GiB, GiB, 3 * GiB, "cpu")
    assert (cpu[0]["where"], cpu[0]["needs"], cpu[0]["fits"]) == ("RAM", 16 * GiB, True)
    assert _verdicts([node("a", ranks=5, device=None, ram=16 * GiB)], 3 * GiB, GiB, 3 * GiB, "cpu")[0]["fits"] is False


def planned(pool, kind):
    return build_plan(LaunchSpec("train.py", [], "python"), pool, LocalDevices(kind, "test", {0: "0", 1: "1"}),
                      master_addr="127.0.0.1", master_port=29500, launcher="ssh", cores=[0, 1], user_env={})


def test_node_memory_measures_this_machine_and_takes_given_figures_for_others(monkeypatch):
    monkeypatch.setattr(device_memory, "ram_bytes", lambda: 64 * GiB)
    monkeypatch.setattr(device_memory, "gpu_memory", lambda: {0: 24 * GiB, 1: 16 * GiB})
    gpu = device_memory.node_memory(planned({"localhost": [0, 1], "far": [0, 1]}, "cuda"), None, None)
    assert [(n.device, n.host_ram, n.local) for n in gpu] == [(16 * GiB, 64 * GiB, True), (None, None, False)]
    given = device_memory.node_memory(planned({"localhost": [0], "far": [0]}, "cuda"), 80 * GiB, 256 * GiB)
    assert [(n.device, n.host_ram) for n in given] == [(80 * GiB, 256 * GiB)] * 2
    cpu = device_memory.node_memory(planned({"localhost": [0, 1], "far": [0]}, "cpu"), None, None)
    assert [(n.ranks, n.device, n.host_ram) for n in cpu] == [(2, None, 64 * GiB), (1, None, None)]
    # On CPU nodes --device-memory is the RAM the ranks share.
    assert device_memory.node_memory(planned({"far": [0]}, "cpu"), 8 * GiB, None)[0].host_ram == 8 * GiB


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_dry_run_memory_object(capsys, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True},
                                  "optimizer": {"type": "SGD", "params": {"momentum": 0.9}},
                                  "zero_optimization": {"stage": 1}}))
    hostfile = tmp_path / "hosts"
    hostfile.write_text("w1 slots=4\nw2 slots=4\n")
    code, out, err = run(capsys, "--dry-run", "--json", "-H", str(hostfile), "--device", "cuda", "--model-params",
                         "1B", "--config", str(config), "--memory-table", "--pipeline-stages", "2",
                         "--device-memory", "16GiB", NOOP)
    assert code == 0, err
    memory = json.loads(out)["memory"]
    assert (memory["stage"], memory["precision"], memory["optimizer"], memory["optimizer_states"]) == (
        1, "bf16", "sgd", 1)
    assert (memory["world_size"], memory["pipeline_stages"], memory["data_parallel"]) == (8, 2, 4)
    psi = 500_000_000  # per pipeline stage
    assert memory["model_state"]["total"] == 2 * psi + 2 * psi + (4 * psi + 4 * psi) // 4 + 4 * psi // 4 // 16
    assert [s["stage"] for s in memory["stages"]] == [0, 1, 2, 3]
    assert "pipeline" in memory["stages"][2]["unsupported"]
    assert memory["fits"][0]["fits"] is True and memory["fits"][0]["hosts"] == ["w1", "w2"]


def test_configured_pipeline_at_stage_2_is_not_called_fitting(capsys, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}}))
    code, out, err = run(capsys, "--dry-run", "--num_gpus", "2", "--model-params", "1M", "--config", str(config),
                         "--pipeline-stages", "2", NOOP)
    assert code == 0, err
    assert "stage 2: dsrun's pipeline runs with ZeRO stage 0 or 1 only" in out and "stage 2: fits" not in out


def test_offload_asked_for_at_stage_0_shows_in_the_other_stages(capsys, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {
        "stage": 0, "offload_optimizer": {"device": "cpu"}}}))
    hostfile = tmp_path / "hosts"
    hostfile.write_text("w1 slots=2\n")
    code, out, err = run(capsys, "--dry-run", "--json", "-H", str(hostfile), "--device", "cuda", "--model-params",
                         "1M", "--config", str(config), "--memory-table", "--device-memory", "16GiB", NOOP)
    assert code == 0, err
    stages = json.loads(out)["memory"]["stages"]
    assert stages[0]["need"]["host"] == 0 and all(stages[s]["need"]["host"] > 0 for s in (1, 2, 3))


def test_remote_memory_is_unknown_without_device_memory(capsys, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("w1 slots=8\n")
    code, out, err = run(capsys, "--dry-run", "-H", str(hostfile), "--device", "cuda", "--model-params", "7e9",
                         NOOP)
    assert code == 0, err
    assert "Memory per rank: 7.00B parameters" in out and "4Ψ + 4Ψ + 8Ψ" in out
    assert "unknown on all 1 node(s)" in out and "give --device-memory" in out
    assert "no config: ZeRO stage 0, fp32" in out


@pytest.mark.parametrize("argv,message", [
    (["--model-params", "7B"], "--model-params only works with --dry-run"),
    (["--dry-run", "--model-params", "lots"], "--model-params 'lots' is not a number"),
    (["--dry-run", "--model", "nocolon"], "write MODULE:FACTORY"),
    (["--dry-run", "--model", "a:b", "--model-params", "1B"], "exclude each other"),
    (["--dry-run", "--memory-table"], "needs --model MODULE:FACTORY or --model-params"),
    (["--dry-run", "--model-params", "1B", "--model-input", "4x8"], "--model-input needs --model"),
    (["--dry-run", "--model", "m:f", "--model-input", "4xq"], "write shapes like"),
    (["--dry-run", "--model-params", "1B", "--device-memory", "80 apples"], "--device-memory"),
    (["--dry-run", "--model-params", "1B", "--num_gpus", "3", "--pipeline-stages", "2"], "does not divide"),
])
def test_bad_memory_flags_are_one_line_errors(capsys, argv, message):
    code, out, err = run(capsys, *argv, NOOP)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
