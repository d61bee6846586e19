"""DeepSpeed's process topologies: named axes over the global ranks, laid out row-major.

The rank of a coordinate is row-major over the axes in the order given, as in DeepSpeed's `ProcessTopology`: the
LAST axis varies fastest. `PipeDataParallelTopology(num_pp, num_dp)` has axes ['pipe', 'data'], so

    rank = stage * num_dp + data_index

a stage's data-parallel replicas hold consecutive ranks (its gradient all-reduce stays on one node when a node holds
whole stages) and one pipeline is every num_dp-th rank: with 2 stages x 2 replicas, stage 0 = ranks [0, 1], stage 1 =
ranks [2, 3], the pipelines are [0, 2] (data index 0) and [1, 3] (data index 1). `PipeModelDataParallelTopology` is
['pipe', 'data', 'model'] in DeepSpeed; dsrun has no model (tensor) parallelism in the pipeline, so its model axis must
be 1 and the layout is the same. No torch: the mapping is plain integers, so the engine and tests can use it anywhere.
"""

from __future__ import annotations

from collections import namedtuple
from itertools import product
from typing import Any

from dsrun.errors import UsageError


class ProcessTopology:
    """Maps coordinates on named axes to global ranks and back (DeepSpeed's API, plus the pipeline helpers the engine
    needs: `stage_of`, `data_index_of`, `pipeline_ranks`, `stage_ranks`)."""

    def __init__(self, axes: list[str], dims: list[int]):
        if len(axes) != len(dims) or len(set(axes)) != len(axes):
            raise UsageError(f"topology axes {axes} and dims {dims}: one dimension per distinct axis name")
        if any(not isinstance(d, int) or d < 1 for d in dims):
            raise UsageError(f"topology dims {dims}: every dimension must be a positive integer")
        self.axes = list(axes)
        self.dims = list(dims)
        self.ProcessCoord = _coord_type(self.axes)  # DeepSpeed's name: coordinates are namedtuples of the axes
        # product() yields coordinates in row-major order, so the i-th coordinate is rank i.
        self._coords = [self.ProcessCoord(*coord) for coord in product(*(range(d) for d in self.dims))]
        self.mapping = {coord: rank for rank, coord in enumerate(self._coords)}

    # ---- DeepSpeed's ProcessTopology API ----

    def get_rank(self, **coord: int) -> int:
        """The global rank at a full coordinate, e.g. `get_rank(pipe=1, data=0)`."""
        if set(coord) != set(self.axes):
            raise ValueError(f"get_rank() needs every axis {self.axes}; use filter_match() for a slice")
        key = self.ProcessCoord(**coord)
        if key not in self.mapping:
            raise ValueError(f"coordinate {coord} is outside the topology {self.shape()}")
        return self.mapping[key]

    def get_coord(self, rank: int) -> Any:
        """The coordinate (a namedtuple with one field per axis) of a global rank."""
        if not 0 <= rank < len(self._coords):
            raise ValueError(f"rank {rank} not found in topology of {len(self._coords)} ranks")
        return self._coords[rank]

    def get_axis_names(self) -> list[str]:
        return list(self.axes)

    def get_dim(self, axis: str) -> int:
        """The size of an axis; 0 for an axis the topology does not have (DeepSpeed's convention)."""
        return self.dims[self.axes.index(axis)] if axis in self.axes else 0

    def shape(self) -> dict[str, int]:
        """{axis: size} in layout order, for messages."""
        return dict(zip(self.axes, self.dims, strict=True))

    def world_size(self) -> int:
        return len(self._coords)

    def get_axis_comm_lists(self, axis: str) -> list[list[int]]:
        """The rank lists that differ only along `axis` (one per coordinate of the other axes, in row-major order),
        each ordered by the coordinate on `axis`: the groups a collective along that axis runs in."""
        if axis not in self.axes:
            return []
        others = [a for a in self.axes if a != axis]
        lists = []
        for rest in product(*(range(self.get_dim(a)) for a in others)):
            fixed = dict(zip(others, rest, strict=True))
            lists.append([self.get_rank(**fixed, **{axis: i}) for i in range(self.get_dim(axis))])
        return lists

    def filter_match(self, **criteria: int) -> list[int]:
        """The ranks whose coordinates equal every given axis value, in rank order."""
        return [rank for rank, coord in enumerate(self._coords)
                if all(getattr(coord, axis) == value for axis, value in criteria.items())]

    def get_axis_list(self, axis: str, idx: int) -> list[int]:
        """The ranks whose coordinate on `axis` is `idx`."""
        return self.filter_match(**{axis: idx})

    def get_rank_repr(self, rank: int, omit_axes: tuple[str, ...] | list[str] = ("data", "pipe"),
                      inner_sep: str = "_", outer_sep: str = "-") -> str:
        """E.g. 'model_00' (DeepSpeed names checkpoint files with it; data and pipe are left out by default)."""
        coord = self.get_coord(rank)
        return outer_sep.join(f"{axis}{inner_sep}{getattr(coord, axis):02d}"
                              for axis in self.axes if axis not in omit_axes)

    def __str__(self) -> str:
        return str(self.mapping)

    # ---- pipeline helpers (an axis the topology lacks counts as size 1, coordinate 0) ----

    def _index(self, rank: int, axis: str) -> int:
        return getattr(self.get_coord(rank), axis) if axis in self.axes else 0

    def stage_of(self, rank: int) -> int:
        """The pipeline stage a global rank runs."""
        return self._index(rank, "pipe")

    def data_index_of(self, rank: int) -> int:
        """Which data-parallel replica (pipeline) a global rank belongs to."""
        return self._index(rank, "data")

    def pipeline_ranks(self) -> list[list[int]]:
        """One list per data-parallel index: that pipeline's ranks ordered by stage (the p2p neighbours)."""
        if "pipe" not in self.axes:
            return [[rank] for rank in range(self.world_size())]
        return sorted(self.get_axis_comm_lists("pipe"), key=lambda ranks: self.data_index_of(ranks[0]))

    def stage_ranks(self, stage: int) -> list[int]:
        """The data-parallel ranks of one stage (its gradient all-reduce group), ordered by data index."""
        return self.filter_match(pipe=stage) if "pipe" in self.axes else list(range(self.world_size()))


def _coord_type(axes: list[str]) -> Any:
    return namedtuple("ProcessCoord", axes)  # the fields are only known at runtime


class PipeDataParallelTopology(ProcessTopology):
    """Pipeline x data parallelism, axes ['pipe', 'data'] (DeepSpeed's order: a stage's replicas are adjacent)."""

    def __init__(self, num_pp: int, num_dp: int):
        super().__init__(axes=["pipe", "data"], dims=[num_pp, num_dp])


class PipeModelDataParallelTopology(ProcessTopology):
    """DeepSpeed's pipe x data x model topology, axes ['pipe', 'data', 'model']; only num_mp == 1 is accepted."""

    def __init__(self, num_pp: int, num_mp: int, num_dp: int):
        if num_mp != 1:
            raise UsageError(f"PipeModelDataParallelTopology num_mp={num_mp}: dsrun has no model (tensor) parallelism"
                             " in the pipeline; use num_mp=1 or PipeDataParallelTopology(num_pp, num_dp)")
        super().__init__(axes=["pipe", "data", "model"], dims=[num_pp, num_dp, num_mp])
