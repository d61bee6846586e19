"""The environment shipped to remote workers: DeepSpeed's prefixes and .dsrun_env/.deepspeed_env files."""

import pytest

from dsrun.errors import UsageError
from dsrun.launcher.backends.envfile import env_file_paths, exported_from, parse_env_file, read_env_files, remote_env


def test_env_file_allows_comments_blanks_export_and_quotes():
    text = "# a comment\n\nA=1\nexport B=two words\n  C = 'quoted = value'  \nD=\"x\"\nE=\nF=a=b\n"
    assert parse_env_file(text, "f") == {"A": "1", "B": "two words", "C": "quoted = value", "D": "x", "E": "",
                                         "F": "a=b"}


@pytest.mark.parametrize("line", ["no equals sign", "1BAD=x", "A B=x", "=x"])
def test_bad_env_file_line_names_file_and_line(line):
    with pytest.raises(UsageError, match=r"\.dsrun_env:2: expected KEY=VALUE"):
        parse_env_file(f"OK=1\n{line}\n", ".dsrun_env")


def test_exported_prefixes_follow_deepspeed():
    env = {"NCCL_IB_HCA": "mlx5", "PYTHONPATH": "/x", "UCX_TLS": "tcp", "MLFLOW_URI": "u", "MV2_X": "1",
           "GLOO_SOCKET_IFNAME": "eth1", "WANDB_API_KEY": "k", "HOME": "/root", "XNCCL": "no"}
    assert sorted(exported_from(env)) == ["GLOO_SOCKET_IFNAME", "MLFLOW_URI", "MV2_X", "NCCL_IB_HCA", "PYTHONPATH",
                                          "UCX_TLS"]


def test_files_from_home_then_cwd_later_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("DS_ENV_FILE", raising=False)
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    (home / ".deepspeed_env").write_text("A=home-ds\nB=home-ds\nC=home-ds\n")
    (home / ".dsrun_env").write_text("B=home-dsrun\n")
    (cwd / ".deepspeed_env").write_text("C=cwd-ds\n")
    env, used = read_env_files(env_file_paths(cwd, home))
    assert env == {"A": "home-ds", "B": "home-dsrun", "C": "cwd-ds"}
    assert used == [home / ".deepspeed_env", home / ".dsrun_env", cwd / ".deepspeed_env"]


def test_ds_env_file_renames_the_deepspeed_file(tmp_path, monkeypatch):
    custom = tmp_path / "custom.env"
    custom.write_text("X=1\n")
    monkeypatch.setenv("DS_ENV_FILE", str(custom))
    env, used = read_env_files(env_file_paths(tmp_path / "nowhere", tmp_path / "nohome"))
    assert env == {"X": "1"} and used == [custom]


def test_env_file_beats_exported_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("DS_ENV_FILE", raising=False)
    (tmp_path / ".dsrun_env").write_text("NCCL_DEBUG=INFO\n")
    env, _ = remote_env({"NCCL_DEBUG": "WARN", "NCCL_ALGO": "ring"}, tmp_path, tmp_path / "nohome")
    assert env == {"NCCL_DEBUG": "INFO", "NCCL_ALGO": "ring"}
