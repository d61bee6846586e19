import torch
from torch import nn

from dsrun.runtime.strategies.layout import as_rows, make_buckets, row_range


def test_row_ranges_match_torch_chunk_and_cover_every_row_once():
    for rows in (0, 1, 5, 8, 9):
        for world in (1, 2, 3, 4):
            ranges = [row_range(rows, world, r) for r in range(world)]
            covered = [i for start, end in ranges for i in range(start, end)]
            assert covered == list(range(rows))
            chunks = torch.arange(rows).chunk(world) if rows else []
            assert [end - start for start, end in ranges if end > start] == [len(c) for c in chunks]


def test_pack_then_unpack_round_trips_every_rank_segment():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(())), nn.Parameter(torch.randn(4))]
    world = 3
    [bucket] = make_buckets(params, world, max_elements=10_000)
    packed = bucket.pack([p.detach() for p in params], world, torch.empty(world * bucket.segment))
    originals = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.zero_()
    bucket.unpack_into_params(packed, world)
    for p, original in zip(params, originals, strict=True):
        assert torch.equal(p.detach(), original)
    # rank 1's segment starts with rows 2..3 of the first parameter
    assert torch.equal(packed[bucket.segment : bucket.segment + 6], originals[0][2:4].reshape(-1))


def test_segment_of_packs_own_shards():
    params = [nn.Parameter(torch.arange(6.0).view(3, 2)), nn.Parameter(torch.arange(3.0))]
    [bucket] = make_buckets(params, 2, max_elements=100)
    shards = [as_rows(p.detach())[slice(*row_range(as_rows(p).shape[0], 2, 1))] for p in params]
    out = bucket.segment_of(shards, 1, torch.full((bucket.segment,), -1.0))
    assert out.tolist() == [4.0, 5.0, 2.0, 0.0, 0.0, 0.0]  # row 2 of the first, element 2 of the second, padding


def test_buckets_respect_the_size_limit():
    params = [nn.Parameter(torch.zeros(n)) for n in (4, 4, 4, 20, 1)]
    buckets = make_buckets(params, 2, max_elements=8)
    assert [[p.numel() for p in b.params] for b in buckets] == [[4, 4], [4], [20], [1]]
