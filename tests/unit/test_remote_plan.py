"""Multi-node plans: the agent command is injection-proof, the wire format round-trips, the dry run shows how
every host is reached (and contacts none), and user mistakes are one-line errors."""

import json
import shlex
import subprocess
import sys

import pytest

from dsrun.cli.launch import main
from dsrun.launcher.node.protocol import NodeJob, jobs_line, parse_event, parse_jobs, signal_line
from dsrun.launcher.plan.remote import EXIT_NO_CWD, EXIT_NO_PYTHON, agent_command
from dsrun.launcher.plan.world import RankPlan

NASTY = "dir with spaces;touch pwned'\"$(touch pwned2)`touch pwned3`"


def test_agent_command_keeps_cwd_and_python_single_words(tmp_path):
    cwd = tmp_path / NASTY
    cwd.mkdir()
    command = agent_command("/bin/echo", str(cwd))
    words = shlex.split(command)
    assert words[:2] == ["cd", str(cwd)]
    # The real shell runs it: echo stands in for python and prints the agent's arguments from inside cwd.
    out = subprocess.run(["sh", "-c", command + " && pwd"], capture_output=True, text=True, cwd=tmp_path, timeout=10)
    assert out.stdout.split("\n")[0] == "-m dsrun.launcher.node"
    assert sorted(p.name for p in tmp_path.iterdir()) == [NASTY]


def test_agent_command_exit_codes_name_what_is_missing(tmp_path):
    missing_cwd = subprocess.run(["sh", "-c", agent_command("/bin/echo", str(tmp_path / "absent"))],
                                 capture_output=True, timeout=10)
    missing_python = subprocess.run(["sh", "-c", agent_command(str(tmp_path / "no-python"), str(tmp_path))],
                                    capture_output=True, timeout=10)
    assert (missing_cwd.returncode, missing_python.returncode) == (EXIT_NO_CWD, EXIT_NO_PYTHON)


def test_jobs_round_trip_and_events_are_told_from_worker_lines():
    rank = RankPlan(rank=3, local_rank=1, node_rank=1, host="w1", slot=1, env={"RANK": "3"},
                    command=["python", "-u", "t.py", "a b;c"], cores=None)
    job = NodeJob(1, "w1", [rank], {"NCCL_DEBUG": "INFO"}, "10.0.0.1", 10.0)
    assert parse_jobs(jobs_line([job])) == [job]
    assert json.loads(signal_line(15)) == {"signal": 15}
    assert parse_event('@dsrun-event {"event": "done", "code": 0}') == {"event": "done", "code": 0}
    assert parse_event('[w1 rank 3] @dsrun-event {"event": "done"}') is None
    assert parse_event("@dsrun-event not json") is None


def test_wrong_protocol_is_refused():
    with pytest.raises(ValueError, match="protocol"):
        parse_jobs(b'{"protocol": 999, "jobs": []}')


@pytest.fixture
def ssh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DS_ENV_FILE", raising=False)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host w0\n  HostName 192.0.2.10\n  User alice\n  Port 2022\n")
    (tmp_path / "hosts").write_text("w0 slots=2\nw1 slots=2\n")
    (tmp_path / "train.py").write_text("")
    (tmp_path / ".dsrun_env").write_text("SECRET_TOKEN=hunter2\n")
    return tmp_path


def dry(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dry-run", *args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_dry_run_json_shows_hosts_from_ssh_config(ssh_home, capsys, monkeypatch):
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    code, out, err = dry(capsys, "--json", "-H", "hosts", "train.py")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["launcher"] == "ssh" and plan["master_addr"] == "192.0.2.10" and plan["master_port"] == 0
    remote = plan["remote"]
    assert [(h["host"], h["address"], h["port"]) for h in remote["hosts"]] == [("w0", "192.0.2.10", 2022),
                                                                              ("w1", "w1", 22)]
    assert remote["hosts"][0]["user"] == "alice" and remote["port_at_launch"] and remote["address_at_launch"]
    assert remote["agent_command"].endswith(f"exec {shlex.quote(sys.executable)} -m dsrun.launcher.node")
    assert {"NCCL_DEBUG", "SECRET_TOKEN"} <= set(remote["env_names"])
    assert "hunter2" not in out  # names of shipped variables are shown, never their values
    assert plan["blocks_from_cores"]
    assert any(n.startswith("OMP_NUM_THREADS: each host's agent derives them from its own cores")
               for n in plan["notes"])


def test_named_cores_are_not_rederived_on_the_hosts(ssh_home, capsys):
    code, out, err = dry(capsys, "--json", "-H", "hosts", "--bind_cores_to_rank", "--bind_core_list", "0-3", "train.py")
    assert code == 0, err
    plan = json.loads(out)
    assert not plan["blocks_from_cores"] and [r["cores"] for r in plan["ranks"][:2]] == [[0, 1], [2, 3]]
    code, out, err = dry(capsys, "--json", "-H", "hosts", "--bind_cores_to_rank", "train.py")
    assert json.loads(out)["blocks_from_cores"]
    assert any(n.startswith("OMP_NUM_THREADS and core blocks: each host's agent") for n in json.loads(out)["notes"])


def test_dry_run_text_names_each_host_and_the_remote_command(ssh_home, capsys):
    code, out, _ = dry(capsys, "-H", "hosts", "--ssh_port", "2200", "--master_port", "1234", "train.py")
    assert code == 0
    assert "192.0.2.10" in out and "2200" in out and "On each host" in out and "-m dsrun.launcher.node" in out
    assert "master 192.0.2.10:1234" in out and "found when the job starts" not in out
    assert "hunter2" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["--launcher", "openmpi"], "--launcher openmpi is not supported"),
    (["--launcher", "rsh"], "--launcher 'rsh' is unknown"),
    (["--launcher", "slurm"], "inside a Slurm allocation"),
    (["--remote-cwd", "relative/dir", "-H", "hosts"], "must be an absolute path"),
    (["--ssh-timeout", "0"], "--ssh-timeout must be more than 0"),
])
def test_multi_node_mistakes_are_one_line_errors(ssh_home, capsys, monkeypatch, args, message):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    code, _, err = dry(capsys, *args, "train.py")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_dry_run_in_slurm_allocation_shows_srun(ssh_home, capsys, monkeypatch):
    for key, value in {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "2(x2)",
                       "SLURM_JOB_CPUS_PER_NODE": "4(x2)"}.items():
        monkeypatch.setenv(key, value)
    code, out, err = dry(capsys, "--json", "--launcher", "slurm", "--launcher_args", "--exclusive", "train.py")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["launcher"] == "slurm" and plan["world_size"] == 4 and plan["master_addr"] == "n1"
    assert [n["host"] for n in plan["nodes"]] == ["n1", "n2"]
    assert plan["remote"]["srun"][:5] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                                          "--nodelist=n1,n2"]
    assert "--cpus-per-task=4" in plan["remote"]["srun"] and "--exclusive" in plan["remote"]["srun"]
    code, out, _ = dry(capsys, "--launcher", "slurm", "train.py")
    assert code == 0 and "srun --nodes=2" in out



def test_a_big_worlds_dry_run_shows_the_ends_of_its_tables_and_json_lists_all(ssh_home, capsys):
    (ssh_home / "hosts").write_text("".join(f"n{i} slots=8\n" for i in range(40)))
    code, out, err = dry(capsys, "-H", "hosts", "train.py")
    assert code == 0, err
    assert "--json lists all" in out, out[:400]
    assert "304 more ranks" in out and "24 more nodes" in out and "24 more hosts" in out
    assert "RANK=7 " in out and "RANK=8 " not in out and "RANK=311 " not in out and "RANK=312 " in out
    code, out, err = dry(capsys, "--json", "-H", "hosts", "train.py")
    assert code == 0 and len(out.splitlines()) == 1  # one line past 256 ranks
    assert [rank["rank"] for rank in json.loads(out)["ranks"]] == list(range(320))
