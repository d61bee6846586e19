"""Rank layout of the pipeline topologies: DeepSpeed's row-major order over ['pipe', 'data'] (data fastest)."""

import pytest

from dsrun.errors import UsageError
from dsrun.pipe import PipeDataParallelTopology, PipeModelDataParallelTopology, ProcessTopology


def test_pipe_data_layout():
    topo = PipeDataParallelTopology(num_pp=3, num_dp=2)  # rank = stage * 2 + data
    assert topo.world_size() == 6
    assert [topo.stage_of(r) for r in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [topo.data_index_of(r) for r in range(6)] == [0, 1, 0, 1, 0, 1]
    assert topo.pipeline_ranks() == [[0, 2, 4], [1, 3, 5]]
    assert [topo.stage_ranks(s) for s in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert topo.get_rank(pipe=2, data=1) == 5
    assert topo.get_coord(3) == topo.ProcessCoord(pipe=1, data=1)


def test_deepspeed_api():
    topo = PipeDataParallelTopology(num_pp=2, num_dp=3)
    assert topo.get_axis_names() == ["pipe", "data"]
    assert topo.get_dim("pipe") == 2 and topo.get_dim("data") == 3 and topo.get_dim("model") == 0
    assert topo.get_axis_comm_lists("pipe") == [[0, 3], [1, 4], [2, 5]]
    assert topo.get_axis_comm_lists("data") == [[0, 1, 2], [3, 4, 5]]
    assert topo.get_axis_comm_lists("model") == []
    assert topo.filter_match(pipe=1) == [3, 4, 5]
    assert topo.get_axis_list("data", 0) == [0, 3]
    assert topo.get_rank_repr(4) == ""  # pipe and data are left out of file names


def test_three_axes_docstring_example():
    # DeepSpeed's get_axis_comm_lists docstring: axes pipe, data, model of 2 each -> pipe lists [0,4],[1,5],[2,6],[3,7].
    topo = ProcessTopology(axes=["pipe", "data", "model"], dims=[2, 2, 2])
    assert topo.get_axis_comm_lists("pipe") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert topo.filter_match(pipe=0, data=1) == [2, 3]
    assert topo.get_rank_repr(3) == "model_01"


def test_model_axis_of_one_keeps_the_layout():
    topo = PipeModelDataParallelTopology(num_pp=2, num_mp=1, num_dp=2)
    assert topo.get_axis_names() == ["pipe", "data", "model"]
    assert topo.pipeline_ranks() == [[0, 2], [1, 3]]
    assert topo.stage_ranks(1) == [2, 3]


def test_model_parallelism_is_refused():
    with pytest.raises(UsageError, match="num_mp=2: dsrun has no model"):
        PipeModelDataParallelTopology(num_pp=2, num_mp=2, num_dp=1)


def test_bad_dims():
    with pytest.raises(UsageError, match="positive"):
        ProcessTopology(axes=["pipe", "data"], dims=[2, 0])
    with pytest.raises(UsageError, match="one dimension per distinct axis"):
        ProcessTopology(axes=["pipe", "pipe"], dims=[2, 2])
    with pytest.raises(ValueError, match="rank 4 not found"):
        PipeDataParallelTopology(2, 2).get_coord(4)
