"""Checkpoints as DeepSpeed scripts make them: unused and once-frozen parameters, per-rank directories and tags."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.worker_output import marked

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("checkpoint_compat_worker.py"))


def launch(mode: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsrun", "--num_gpus", "2", "--no_local_rank", WORKER, mode,
                           str(root)], capture_output=True, text=True, timeout=300)


def test_unused_and_once_frozen_parameters_save_and_load_at_every_stage(tmp_path):
    result = launch("unused", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = marked(result.stdout, "RESULTS")
    for stage in range(4):
        # Never given a gradient: averaged as zero and stepped, as in DeepSpeed, so its state exists and reloads.
        assert found[f"unused z{stage}"] == {"encoder state equal": True, "pooler steps": 2.0}
        # Frozen when saved, trainable when loaded: the load succeeds and leaves it without state, as saved.
        assert found[f"frozen z{stage}"] == {"pooler state": [], "steps": 2}


def test_ranks_saving_to_different_directories_stop_with_one_line_and_publish_nothing(tmp_path):
    result = launch("dirs", tmp_path)
    assert result.returncode == 2
    assert f"different directories: rank 0 {tmp_path}/run-0, rank 1 {tmp_path}/run-1" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_different_tags_follow_tag_validation(tmp_path):
    result = launch("tags", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = marked(result.stdout, "RESULTS")
    assert found["Fail"].startswith("raised: save_checkpoint was given different tags: rank 0 'tag0', rank 1 'tag1'")
    assert found["Warn"] == "saved" and "using rank 0's tag" in result.stderr
    assert (tmp_path / "Warn" / "tag0").is_dir() and not (tmp_path / "Warn" / "tag1").exists()
    assert not (tmp_path / "Fail").exists()


def test_16bit_model_frozen_parameters_and_a_forward_only_stage3_engine(tmp_path):
    result = launch("weights", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = marked(result.stdout, "RESULTS")
    for stage in range(4):  # the training dtype, whole, loadable into a plain model
        assert found[f"z{stage}"] == {"wrote": True, "dtype": "torch.bfloat16", "equal": True}, stage
    assert found["z3 without gather"] is False and "stage3_gather_16bit_weights_on_model_save" in result.stderr
    assert found["frozen keys"] == ["head.bias", "head.weight", "pooler.bias", "pooler.weight"]
    assert found["frozen reload head equal"] is True
    assert found["z3 forward only"] == [True, [2, 1]]


def test_optimizer_state_that_is_not_element_wise_saves_per_rank_at_stages_1_and_2(tmp_path):
    result = launch("ranklocal", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marked(result.stdout, "RESULTS") == {"z1": [True, True], "z2": [True, True]}
