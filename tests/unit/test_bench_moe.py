"""The MoE benchmark's summary: ratios per repetition, checks as the worst rank, dropped routes, the table."""

from __future__ import annotations

import pytest


def _rank(times: dict, output_gap: float, same_counts: bool, counts: list[int], ids: list[int]) -> dict:
    check = {"output": output_gap, "l_aux": 0.0, "same_counts": same_counts, "input_grad": 0.0, "gate_grad": 0.0,
             "expert_grad": 1e-9}
    return {
        "configs": [{"k": 1, "capacity": 128, "exp_counts": counts, "times": times, "cpu_times": times,
                     "checks": {"dsrun-dsrun-ep1": check}}],
        "placement": [{"impl": "dsrun", "ep_size": 2, "global_ids": ids, "expert_bytes": 50,
                       "all_expert_bytes": 100}],
        "errors": {},
    }


def test_moe_summary_takes_the_worst_rank_and_counts_drops() -> None:
    from bench.moe_bench import summarize, table

    times = {"dsrun": [1.0, 2.2], "dsrun-ep1": [1.0, 2.0]}
    ranks = [_rank(times, 1e-7, True, [130, 126, 128, 128], [0, 1]),
             _rank(times, 3e-7, False, [120, 140, 125, 127], [2, 3])]
    summary = summarize(ranks)
    [row] = summary["rows"]
    # Per-repetition ratios 1.0 and 1.1: their median, not the ratio of the medians.
    assert row["ratios"]["dsrun/dsrun-ep1"]["median"] == pytest.approx(1.05)
    assert row["checks"]["dsrun-dsrun-ep1"]["output"] == 3e-7  # the worse rank
    assert row["checks"]["dsrun-dsrun-ep1"]["same_counts"] is False  # one rank differing is a difference
    assert row["dropped"] == 2 + 12  # routes over the capacity of 128, both ranks
    assert row["goal_vs_deepspeed"] is None
    assert [p["rank"] for p in summary["placement"]] == [0, 1]

    result = {"impls": ["dsrun", "dsrun-ep1"], "summary": summary, "rounds": 5, "steps_per_round": 2,
              "warmup_steps": 3, "loadavg": {"start": [1.0], "end": [1.0]},
              "facts": {"hidden": 256, "ffn": 1024, "experts": 4, "expert_parameters": 525568, "world": 2,
                        "threads": 1, "tokens": 512, "capacity_factor": 1.0, "aux_coef": 0.01}}
    text = "\n".join(table(result))
    assert "| top-1 | 128 | 1600.0 (1000.0–2200.0) |" in text
    assert "| top-1 | dsrun − dsrun ep1 | 3.0e-07 | 0.0e+00 | **no** |" in text
    assert "| 1 | dsrun | 2 | 2, 3 | 0.00 | 0.00 | 0.500 | 0.500 |" in text
    assert "`bench/peers.sh --only moe` adds it" in text
