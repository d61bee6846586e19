import pytest

from dsrun.errors import UsageError
from dsrun.launcher.plan.cores import parse_core_list, split_cores
from dsrun.launcher.plan.devices import LocalDevices
from dsrun.launcher.plan.world import LaunchSpec, build_plan, command_for, launcher_for

CPU = LocalDevices("cpu", "test")
GPU = LocalDevices("cuda", "test")


def spec(**kwargs):
    return LaunchSpec(script="train.py", script_args=["--lr", "1 2"], python="/py", **kwargs)


def plan(world, devices=CPU, cores=(0, 1, 2, 3), user_env=None, launcher="ssh", **spec_kwargs):
    return build_plan(
        spec(**spec_kwargs),
        world,
        devices,
        master_addr="10.0.0.1",
        master_port=1234,
        launcher=launcher,
        cores=list(cores),
        user_env=user_env or {},
        config_path="/abs/ds.json",
    )


def test_ranks_numbered_host_by_host_and_env():
    p = plan({"a": [0, 2], "b": [1, 3, 5]})
    assert p.world_size == 5
    assert [(r.rank, r.host, r.slot, r.local_rank, r.node_rank) for r in p.ranks] == [
        (0, "a", 0, 0, 0), (1, "a", 2, 1, 0), (2, "b", 1, 0, 1), (3, "b", 3, 1, 1), (4, "b", 5, 2, 1)
    ]
    env = p.ranks[3].env
    assert env["RANK"] == "3" and env["LOCAL_RANK"] == "1" and env["WORLD_SIZE"] == "5"
    assert env["LOCAL_WORLD_SIZE"] == env["LOCAL_SIZE"] == "3"
    assert env["NODE_RANK"] == env["CROSS_RANK"] == env["GROUP_RANK"] == "1"
    assert env["CROSS_SIZE"] == "2"
    assert env["MASTER_ADDR"] == "10.0.0.1" and env["MASTER_PORT"] == "1234"
    assert env["DSRUN_CONFIG"] == "/abs/ds.json"
    assert "CUDA_VISIBLE_DEVICES" not in env  # CPU nodes
    assert [n.ranks for n in p.nodes] == [[0, 1], [2, 3, 4]]
    # RANK - LOCAL_RANK is constant per node (unlike DeepSpeed's RANK % LOCAL_SIZE rotation)
    assert {int(r.env["RANK"]) - int(r.env["LOCAL_RANK"]) for r in p.ranks if r.host == "b"} == {2}


def test_gpu_nodes_see_all_their_selected_slots():
    p = plan({"a": [1, 3]}, devices=GPU)
    assert [r.env["CUDA_VISIBLE_DEVICES"] for r in p.ranks] == ["1,3", "1,3"]
    assert p.backend == "nccl"


def test_omp_threads_split_cores_unless_user_set():
    assert plan({"a": [0, 1]}).ranks[0].env["OMP_NUM_THREADS"] == "2"
    assert plan({"a": [0, 1, 2, 3, 4, 5]}).ranks[0].env["OMP_NUM_THREADS"] == "1"
    p = plan({"a": [0, 1]}, user_env={"OMP_NUM_THREADS": "7"}, launcher="local")
    assert "OMP_NUM_THREADS" not in p.ranks[0].env
    assert any("OMP_NUM_THREADS=7" in note for note in p.notes)
    # Over SSH the launcher's variable does not travel (each host's agent decides): no "kept" note.
    p = plan({"a": [0, 1]}, user_env={"OMP_NUM_THREADS": "7"})
    assert "OMP_NUM_THREADS" not in p.ranks[0].env and not any("OMP_NUM_THREADS=7" in n for n in p.notes)


def test_core_binding_blocks():
    p = plan({"a": [0, 1]}, cores=[0, 1, 2, 3, 4], bind_cores=True)
    assert [r.cores for r in p.ranks] == [[0, 1], [2, 3]]
    assert p.ranks[1].env["OMP_NUM_THREADS"] == "2"


def test_commands():
    assert command_for(spec(), 1) == ["/py", "-u", "train.py", "--local_rank=1", "--lr", "1 2"]
    assert command_for(spec(no_local_rank=True), 1) == ["/py", "-u", "train.py", "--lr", "1 2"]
    assert command_for(spec(module=True), 0)[:5] == ["/py", "-u", "-m", "train.py", "--local_rank=0"]
    assert command_for(spec(no_python=True), 0)[:2] == ["train.py", "--local_rank=0"]


def test_launcher_choice():
    assert launcher_for({"localhost": [0]}, False) == "local"
    assert launcher_for({"localhost": [0]}, True) == "ssh"
    assert launcher_for({"localhost": [0], "b": [0]}, False) == "ssh"
    assert launcher_for({"gpu-box-7": [0]}, False) == "ssh"  # a lone remote host is not run here


def test_json_shape():
    data = plan({"a": [0]}).to_dict()
    assert {"world_size", "master_addr", "master_port", "nodes", "ranks", "batch"} <= set(data)
    assert set(data["ranks"][0]) >= {"rank", "local_rank", "host", "slot", "env", "command"}
    assert set(data["nodes"][0]) >= {"host", "node_rank", "slots", "ranks"}


def test_core_list_grammar():
    assert parse_core_list("0,2-4,7") == [0, 2, 3, 4, 7]
    for bad in ("3,1", "1-0", "a", "1-", "0,0"):
        with pytest.raises(UsageError):
            parse_core_list(bad)
    with pytest.raises(UsageError, match="at least one core each"):
        split_cores([0], 2)
