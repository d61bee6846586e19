"""The pipeline engine in one process (one stage): train_batch equals the same layers trained by hand, training_data
repeats as DeepSpeed's pipeline engine repeats it, and the data mistakes each end with one line."""

import pytest
import torch
from torch import nn

import dsrun
from dsrun.pipe import PipelineModule

CONFIG = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2, "gradient_clipping": 0,
          "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}


def layers():
    torch.manual_seed(0)
    return [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)]


def test_train_batch_equals_accumulated_steps_by_hand(single_process):
    data = [(torch.randn(2, 3), torch.randn(2, 2)) for _ in range(4)]
    module = PipelineModule(layers(), num_stages=1, loss_fn=nn.functional.mse_loss)
    engine, _, _, _ = dsrun.initialize(model=module, model_parameters=module.parameters(), config=CONFIG)
    reference = nn.Sequential(*layers())
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for step in range(2):
        loss = engine.train_batch(iter(data[2 * step:2 * step + 2]))
        optimizer.zero_grad()
        losses = [nn.functional.mse_loss(reference(x), y) for x, y in data[2 * step:2 * step + 2]]
        (sum(losses) / 2).backward()
        optimizer.step()
        assert abs(loss.item() - (sum(losses) / 2).item()) < 1e-6
    for mine, theirs in zip(module.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


def test_training_data_repeats_pass_after_pass(single_process):
    samples = [(torch.randn(3), torch.randn(2)) for _ in range(4)]  # one pass = one train_batch
    module = PipelineModule(layers(), num_stages=1, loss_fn=nn.functional.mse_loss)
    engine, _, _, _ = dsrun.initialize(model=module, model_parameters=module.parameters(), config=CONFIG,
                                       training_data=samples)
    for _ in range(3):
        engine.train_batch()
    assert engine.global_steps == 3 and engine.global_samples == 12


def test_an_iterator_that_runs_out_is_one_line(single_process, capsys):
    module = PipelineModule(layers(), num_stages=1, loss_fn=nn.functional.mse_loss)
    engine, _, _, _ = dsrun.initialize(model=module, model_parameters=module.parameters(), config=CONFIG)
    with pytest.raises(SystemExit) as exited:
        engine.train_batch(iter([(torch.randn(2, 3), torch.randn(2, 2))]))
    assert exited.value.code == 2
    assert "ran out after 1 of the 2 micro-batches" in capsys.readouterr().err


def test_training_data_is_read_in_order_as_deepspeeds_pipeline_engine_reads_it(single_process):
    samples = [(torch.full((3,), float(i)), torch.zeros(2)) for i in range(8)]
    module = PipelineModule(layers(), num_stages=1, loss_fn=nn.functional.mse_loss)
    engine, _, loader, _ = dsrun.initialize(model=module, model_parameters=module.parameters(), config=CONFIG,
                                            training_data=samples)
    assert [batch[0][:, 0].tolist() for batch in loader] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
