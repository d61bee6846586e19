"""The `dsrun` command in-process: flags, dry-run output and one-line errors (no worker is started here)."""

import json
from pathlib import Path

import pytest

from dsrun.cli.launch import main
from dsrun.launcher.plan import resolve

REPO = Path(__file__).resolve().parents[2]
TRAIN = str(REPO / "examples" / "train.py")
CONFIG = str(REPO / "examples" / "ds_config.json")


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def dry_json(capsys, *argv):
    code, out, err = run(capsys, "--dry-run", "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_dry_run_json_world_env_and_batch(capsys):
    plan = dry_json(capsys, "--num_gpus", "2", TRAIN, "--deepspeed_config", CONFIG)
    assert plan["world_size"] == 2 and plan["master_addr"] == "127.0.0.1"
    assert 0 < plan["master_port"] < 65536
    assert [r["env"]["RANK"] for r in plan["ranks"]] == ["0", "1"]
    assert plan["ranks"][1]["command"][-3:] == ["--local_rank=1", "--deepspeed_config", CONFIG]
    assert plan["ranks"][0]["env"]["DSRUN_CONFIG"] == CONFIG
    assert plan["batch"] == {
        "train_batch_size": 64,
        "train_micro_batch_size_per_gpu": 16,
        "gradient_accumulation_steps": 2,
        "data_parallel_size": 2,
        "derived": ["train_batch_size"],
    }
    assert plan["backend"] == "gloo" and "CUDA_VISIBLE_DEVICES" not in plan["ranks"][0]["env"]


def test_bare_cpu_run_is_one_worker_and_no_config_means_null_batch(capsys):
    plan = dry_json(capsys, TRAIN)
    assert plan["world_size"] == 1 and plan["batch"] is None


def test_num_procs_alias_and_dashed_spelling(capsys):
    assert dry_json(capsys, "--num_procs", "3", TRAIN)["world_size"] == 3
    assert dry_json(capsys, "--num-gpus", "2", "--master-port", "4000", TRAIN)["master_port"] == 4000


def test_user_visible_devices_are_the_gpu_pool(capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    plan = dry_json(capsys, TRAIN)
    assert plan["backend"] == "nccl"
    assert [r["slot"] for r in plan["ranks"]] == [2, 3]
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in plan["ranks"]} == {"2,3"}
    assert dry_json(capsys, "--num_gpus", "1", TRAIN)["ranks"][0]["env"]["CUDA_VISIBLE_DEVICES"] == "2"
    assert dry_json(capsys, "-i", "localhost:3", TRAIN)["ranks"][0]["env"]["CUDA_VISIBLE_DEVICES"] == "3"
    code, _, err = run(capsys, "--num_gpus", "3", TRAIN)
    assert code == 2 and "more than the 2 GPU(s) here (CUDA_VISIBLE_DEVICES=2,3)" in err
    code, _, err = run(capsys, "-i", "localhost:0", TRAIN)
    assert code == 2 and "has no slot 0" in err


def test_hostfile_selection_in_json(capsys, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("w0 slots=4\nw1 slots=4\n")
    plan = dry_json(capsys, "-H", str(hostfile), "--include", "w0@w1:0,2", TRAIN)
    assert plan["launcher"] == "ssh" and plan["master_addr"] == "w0"
    assert [(n["host"], n["slots"], n["ranks"]) for n in plan["nodes"]] == [
        ("w0", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("w1", [0, 2], [4, 5]),
    ]
    assert plan["ranks"][5]["env"]["LOCAL_RANK"] == "1"


def test_script_args_pass_untouched(capsys):
    args = ["--name", "a b 'c' \"d\"", "--", "--num_gpus", "7", "--dry-run"]
    plan = dry_json(capsys, TRAIN, *args)
    assert plan["ranks"][0]["command"][-len(args):] == args
    assert plan["world_size"] == 1
    assert any("--num_gpus" in note and "put dsrun flags first" in note for note in plan["notes"])


def test_rich_dry_run_shows_plan_and_batch_math(capsys):
    code, out, _ = run(capsys, "--dry-run", "--num_gpus", "2", TRAIN, "--deepspeed_config", CONFIG)
    assert code == 0
    assert "train_batch_size 64 = micro 16 × accumulation 2 × 2 data-parallel ranks" in out
    assert "Nodes" in out and "Ranks" in out and "--local_rank=1" in out


def test_script_config_that_is_not_a_deepspeed_config_is_noted(capsys, tmp_path):
    model_config = tmp_path / "model.yaml"
    model_config.write_text("hidden: 128\n")
    plan = dry_json(capsys, TRAIN, "--config", str(model_config))
    assert plan["batch"] is None and "DSRUN_CONFIG" not in plan["ranks"][0]["env"]
    assert any("was not used as the run config" in note for note in plan["notes"])


def test_the_dry_run_shows_what_the_config_would_warn_about(capsys, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text('{"train_batch_size": 4, "zero_optimization": {"stage": 2, "overlap_comm": true},'
                      ' "flops_profiler": {"enabled": true}}')
    plan = dry_json(capsys, "--num_gpus", "2", "--config", str(config), TRAIN)
    notes = [n for n in plan["notes"] if n.startswith(f"{config}: ")]
    assert len(notes) == 2 and "overlap_comm is accepted but dsrun does not act on it" in notes[0]
    assert "flops_profiler is accepted but dsrun does not act on it" in notes[1]
    code, out, _ = run(capsys, "--dry-run", "--num_gpus", "2", "--config", str(config), TRAIN)
    assert code == 0 and "flops_profiler is accepted" in " ".join(out.split())


def test_the_dry_run_names_the_auto_values_the_script_must_fill_in(capsys, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text('{"train_micro_batch_size_per_gpu": 2, "gradient_clipping": "auto",'
                      ' "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto"}}}')
    plan = dry_json(capsys, "--config", str(config), TRAIN)
    (note,) = [n for n in plan["notes"] if '"auto" in' in n]
    assert "gradient_clipping, scheduler.params.total_num_steps: the script must fill these in" in note


def test_default_deepspeed_hostfile_is_used_loudly(capsys, tmp_path, monkeypatch):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    monkeypatch.setattr(resolve, "DEEPSPEED_DEFAULT_HOSTFILE", hostfile)
    plan = dry_json(capsys, TRAIN)
    assert plan["world_size"] == 2 and any("default hostfile" in note for note in plan["notes"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num_gpux", "2", TRAIN], "No such option: --num_gpux"),
        (["--num", "2", TRAIN], "--num is ambiguous: it could be"),
        (["does_not_exist.py"], "script does_not_exist.py does not exist"),
        (["--num_gpus", "0", TRAIN], "--num_gpus must be at least 1"),
        (["--num_nodes", "2", TRAIN], "needs a hostfile"),
        (["-H", "/nonexistent/hosts", TRAIN], "hostfile /nonexistent/hosts does not exist"),
        (["--json", TRAIN], "--json only works with --dry-run"),
        (["--config", "/nonexistent.json", TRAIN], "config file /nonexistent.json does not exist"),
        (["--master_port", "70000", TRAIN], "between 1 and 65535"),
        (["-m", "--no_python", "x"], "exclude each other"),
        (["-i", "localhost", "-e", "localhost", TRAIN], "mutually exclusive"),
        (["--device", "tpu", TRAIN], "--device must be one of"),
        (["--shutdown-timeout", "-1", TRAIN], "finite number of seconds, 0 or more"),
        (["--shutdown-timeout", "nan", TRAIN], "finite number of seconds"),
        (["--hang-timeout", "0", TRAIN], "--hang-timeout must be a finite number of seconds, more than 0"),
        (["--hang-timeout", "inf", TRAIN], "--hang-timeout must be a finite number of seconds"),
        (["--bind_core_list", "0-999", TRAIN], "cores this machine does not offer"),
        (["--config", str(REPO / "tests" / "unit" / "bad_stage.json"), TRAIN], "stage must be an integer from 0 to 3"),
        (["--bind_core_list", "3,1", TRAIN], "ascend"),
        (["--num_gpus", "3", "--bind_core_list", "0", TRAIN], "at least one core each"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("dsrun: error: ") and err.count("\n") == 1, err
    assert message in err


def test_a_hostfile_with_absurd_slots_is_one_line(capsys, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=99999999999999999999\n")  # was an OverflowError traceback
    code, _, err = run(capsys, "-H", str(hostfile), "--dry-run", TRAIN)
    assert code == 2 and err.count("\n") == 1 and "more workers than one host can run (at most 4,096)" in err


def test_a_bug_inside_dsrun_is_one_line_naming_the_traceback_file(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(resolve, "plan_launch", lambda options: {}["boom"])  # any unexpected exception
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    code, out, err = run(capsys, "--dry-run", TRAIN)
    assert code == 70 and err.count("\n") == 1, err
    assert err.startswith("dsrun: error: internal error (a bug in dsrun; please report it): KeyError: 'boom';")
    (written,) = tmp_path.glob("dsrun-error-*.txt")
    assert "KeyError: 'boom'" in written.read_text() and f"the full traceback is in {written}" in err
    assert "Traceback" not in out + err


def test_batch_error_names_the_numbers(capsys, tmp_path):
    config = tmp_path / "ds.json"
    config.write_text('{"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4}')
    code, _, err = run(capsys, "--num_gpus", "2", "--config", str(config), TRAIN)
    assert code == 2 and "train_batch_size=10, train_micro_batch_size_per_gpu=4" in err and "with 2" in err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("dsrun ")


def test_help_has_grouped_panels(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for panel in ("Resources", "Rendezvous", "Script", "Output and dry run", "Processes"):
        assert panel in out
