import pytest

from dsrun.config.batch import resolve_batch
from dsrun.errors import UsageError

T, M, G = "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"


@pytest.mark.parametrize(
    ("config", "w", "expected", "derived"),
    [
        ({T: 64, M: 4, G: 2}, 8, (64, 4, 2), ()),
        ({T: 64, M: 4}, 8, (64, 4, 2), (G,)),
        ({T: 64, G: 2}, 8, (64, 4, 2), (M,)),
        ({M: 4, G: 2}, 8, (64, 4, 2), (T,)),
        ({T: 64}, 8, (64, 8, 1), (M, G)),
        ({M: 4}, 8, (32, 4, 1), (G, T)),
        ({T: "auto", M: 4, G: 2}, 2, (16, 4, 2), (T,)),
        ({T: 16, M: "auto", G: "auto"}, 2, (16, 8, 1), (M, G)),
        ({T: 1, M: 1, G: 1}, 1, (1, 1, 1), ()),
    ],
)
def test_derivation(config, w, expected, derived):
    batch = resolve_batch(config, w)
    assert (batch.train_batch_size, batch.train_micro_batch_size_per_gpu, batch.gradient_accumulation_steps) == expected
    assert batch.data_parallel_size == w
    assert set(batch.derived) == set(derived)


def test_derivation_text():
    assert resolve_batch({M: 4, G: 2}, 8).derivation() == (
        "train_batch_size 64 = micro 4 × accumulation 2 × 8 data-parallel ranks"
    )


@pytest.mark.parametrize(
    ("config", "w", "message"),
    [
        ({T: 10, M: 4}, 2, r"do not divide: train_batch_size=10, train_micro_batch_size_per_gpu=4, "
                           r"gradient_accumulation_steps=auto with 2"),
        ({T: 10, G: 3}, 2, "do not divide"),
        ({T: 7}, 2, "do not divide"),
        ({T: 64, M: 4, G: 3}, 8, "disagree: train_batch_size=64 but micro 4 × accumulation 3 × 8"),
        ({G: 2}, 2, "neither train_batch_size nor"),
        ({}, 2, "neither"),
        ({T: 0, M: 1}, 1, "train_batch_size must be a positive integer, got 0"),
        ({M: -2}, 1, "positive integer, got -2"),
        ({M: 2.5}, 1, "got 2.5"),
        ({M: 4.0}, 1, "got 4.0"),
        ({M: True}, 1, "got True"),
        ({M: "4"}, 1, "got '4'"),
    ],
)
def test_errors_name_the_numbers(config, w, message):
    with pytest.raises(UsageError, match=message):
        resolve_batch(config, w)
