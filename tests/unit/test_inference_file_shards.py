"""file_shards in one process: the runs of saved rows and columns a part maps back to, and whole (unsplit) tensors
read from .safetensors and .pt files, transposed where the split changed the layout; files that do not fit are one
line."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dsrun.errors import UsageError
from dsrun.inference import file_shards
from dsrun.inference.shard import Relayout, _heads_by_rank


def test_consecutive_indices_become_runs():
    assert file_shards._runs([4, 5, 6, 0, 1, 9]) == [slice(4, 7), slice(0, 2), slice(9, 10)]


def test_a_regrouped_fused_qkv_maps_to_runs_of_saved_columns():
    # GPT-2's c_attn weight saved as in x out (8 x 12); as nn.Linear its 12 rows regrouped for 2 ranks
    order = _heads_by_rank(12, 2)
    relayout = Relayout(transposed=True, order=order)
    whole = torch.empty(12, 8)  # not split: this rank reads it all, in 6 runs of the saved columns
    assert file_shards.saved_runs(whole, relayout) == [[slice(0, 8)], [slice(0, 2), slice(4, 6), slice(8, 10),
                                                                       slice(2, 4), slice(6, 8), slice(10, 12)]]


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.proj = nn.Linear(3, 4)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_whole_tensors_load_from_a_file_tied_and_transposed(tmp_path, suffix):
    torch.manual_seed(0)
    saved = Tied()
    tensors = {"embed.weight": saved.embed.weight.detach(), "proj.weight": saved.proj.weight.detach().t().contiguous(),
               "proj.bias": saved.proj.bias.detach()}  # the tied head.weight saved once, proj stored as in x out
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(tensors, str(path))
    else:
        torch.save({"module": tensors}, path)
    model = Tied()
    file_shards.load(model, path, {"proj.weight": Relayout(transposed=True)})
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_files_that_do_not_fit_are_one_line(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"embed.weight": torch.zeros(5, 3), "proj.weight": torch.zeros(4, 3)}, str(path))
    with pytest.raises(UsageError, match=r"does not fit the model: 1 of the model's weights missing \(first 'proj.b"):
        file_shards.load(Tied(), path, {})
    save_file({"embed.weight": torch.zeros(5, 3), "proj.weight": torch.zeros(4, 3), "proj.bias": torch.zeros(4)},
              str(path))
    with pytest.raises(UsageError, match=r"proj.weight has shape \(4, 3\), the model's is \(3, 4\)"):
        file_shards.load(Tied(), path, {"proj.weight": Relayout(transposed=True)})
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(UsageError, match=r"junk.safetensors is not a safetensors file"):
        file_shards.load(Tied(), junk, {})
