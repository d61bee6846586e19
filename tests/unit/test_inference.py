"""init_inference in this process: DeepSpeed's config keys, the plans found in tiny Hugging Face models, the fused
qkv regrouping, weights files, and a world of one (plain python, tp_size 1) running the model unchanged."""

import pytest
import torch
from torch import nn

from dsrun.errors import UsageError
from dsrun.inference import config, plans, shard, weights
from dsrun.inference.initialize import build

transformers = pytest.importorskip("transformers")


def gpt2(heads: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50, n_positions=32, n_embd=8 * heads, n_layer=2, n_head=heads, eos_token_id=49)).eval()


def llama(kv_heads: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=32, eos_token_id=49)).eval()


@pytest.mark.parametrize(("given", "dtype"), [
    (torch.float16, torch.float16), ("fp32", torch.float32), ("float32", torch.float32), ("half", torch.float16),
    ("fp16", torch.float16), ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), ("torch.float32", torch.float32),
])  # fmt: skip
def test_dtype_by_deepspeeds_names(given, dtype):
    assert config.parse(dtype=given).dtype is dtype


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dtype": "fp31"}, 'dtype "fp31" is not a dtype: use torch.float32/float16/bfloat16 or one of "fp32", "fp16",'
                        ' "bf16" (did you mean "fp32"?)'),
    ({"dtype": torch.int8}, "dtype torch.int8 is not one init_inference runs in"),
    ({"tensor_paralel": {"tp_size": 2}}, 'tensor_paralel is not a DeepSpeed inference config key (did you mean'
                                         ' "tensor_parallel"?)'),
    ({"tensor_parallel": {"size": 2}}, 'tensor_parallel.size is not a DeepSpeed inference key (did you mean'
                                       ' "tp_size"?)'),
    ({"tensor_parallel": {"tp_size": 0}}, "tensor_parallel.tp_size must be a positive integer, got 0"),
    ({"tensor_parallel": {"tp_size": 2}, "mp_size": 4}, "mp_size=4 and tensor_parallel.tp_size=2 disagree"),
    ({"tensor_parallel": 2}, 'tensor_parallel must be a mapping such as {"tp_size": 2}, got 2'),
    ({"checkpoint": {"type": "ds_model"}}, "checkpoint must be a path"),
    ({"tp_plan": {"*.up_proj": "column"}}, 'tp_plan["*.up_proj"] must be "colwise" or "rowwise", got "column"'),
])  # fmt: skip
def test_bad_config_is_one_line(kwargs, message):
    with pytest.raises(UsageError) as raised:
        config.parse(**kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_config_dict_and_kwargs_merge_kwargs_winning():
    parsed = config.parse({"dtype": "fp16", "mp_size": 2, "replace_with_kernel_inject": True}, dtype="bf16")
    assert parsed.dtype is torch.bfloat16 and parsed.tp_size == 2
    assert parsed.ignored == ["replace_with_kernel_inject"]
    assert config.parse(tensor_parallel={"tp_size": 4}).tp_size == 4 and config.parse().tp_size is None
    assert config.parse(replace_with_kernel_inject=False).ignored == []


def test_gpt2_plan_splits_fused_qkv_and_mlp():
    plan = plans.automatic(gpt2())
    assert plan.styles["transformer.h.0.attn.c_attn"] == plans.FUSED_QKV
    assert plan.styles["transformer.h.0.attn.c_proj"] == plans.ROWWISE
    assert plan.styles["transformer.h.1.mlp.c_fc"] == plans.COLWISE
    assert plan.styles["transformer.h.1.mlp.c_proj"] == plans.ROWWISE
    assert len(plan.styles) == 8 and [block.heads for block in plan.attention] == [4, 4]
    assert not any("wte" in name or "lm_head" in name for name in plan.styles)  # embeddings and head stay whole


def test_llama_plan_and_grouped_query_heads():
    plan = plans.automatic(llama())
    assert {name.rsplit(".", 1)[1]: style for name, style in plan.styles.items()} == {
        "q_proj": "colwise", "k_proj": "colwise", "v_proj": "colwise", "o_proj": "rowwise",
        "gate_proj": "colwise", "up_proj": "colwise", "down_proj": "rowwise"}
    assert (plan.attention[0].heads, plan.attention[0].kv_heads) == (4, 2)
    plans.check_divides(plan, 2)
    with pytest.raises(UsageError, match="tp_size=2 does not divide the 1 key/value heads of model.layers.0.self_attn"):
        plans.check_divides(plans.automatic(llama(kv_heads=1)), 2)
    with pytest.raises(UsageError, match="tp_size=4 does not divide the 2 key/value heads"):
        plans.check_divides(plan, 4)


def test_explicit_plan_matches_names_and_refuses_patterns_matching_nothing():
    plan = plans.explicit(llama(), {"model.layers.*.mlp.up_proj": "colwise", "*.down_proj": "rowwise"})
    assert plan.styles == {"model.layers.0.mlp.up_proj": "colwise", "model.layers.0.mlp.down_proj": "rowwise"}
    with pytest.raises(UsageError, match="tp_plan pattern 'layers.*.mlp' matches no module"):
        plans.explicit(llama(), {"layers.*.mlp": "colwise"})


def test_fused_qkv_rows_are_regrouped_by_rank():
    # [q0 q1 q2 q3 | k0..k3 | v0..v3] in 2 ranks: rank 0 gets q0 q1 k0 k1 v0 v1, rank 1 the rest
    assert shard._heads_by_rank(12, 2).tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]


def test_conv1d_becomes_the_same_linear():
    conv = gpt2().transformer.h[0].attn.c_attn
    x = torch.randn(3, conv.weight.shape[0])
    assert torch.allclose(shard.as_linear(conv)(x), conv(x), atol=1e-6)


def test_weights_files_that_do_not_fit_are_one_line(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match=r"checkpoint .*junk.pt is not a torch weights file"):
        weights.read(junk)
    with pytest.raises(UsageError, match="does not exist"):
        weights.read(tmp_path / "nothing.pt")
    other = tmp_path / "other.pt"
    torch.save({"module": llama().state_dict()}, other)
    with pytest.raises(UsageError, match=r"does not fit the model: \d+ of the model's weights missing"):
        weights.load_into(gpt2(), other)


def test_a_world_of_one_runs_the_model_unchanged(single_process):
    model = gpt2()
    ids = torch.randint(0, 49, (1, 6))
    with torch.no_grad():
        want = model(ids).logits
        tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    engine = build(model, {"dtype": "fp32"})
    assert engine.module is model and engine.tp_size == 1
    assert torch.equal(engine(ids).logits, want)
    assert torch.equal(engine.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                       do_sample=False), tokens)
    assert engine.config is model.config  # the model's attributes through the engine


def test_cuda_graphs_are_refused_on_cpu(single_process):
    with pytest.raises(UsageError, match="enable_cuda_graph needs CUDA; this job runs on CPU"):
        build(gpt2(), enable_cuda_graph=True)


def test_a_model_without_generate_says_so(single_process):
    engine = build(nn.Linear(2, 2))
    with pytest.raises(UsageError, match="Linear has no generate"):
        engine.generate(torch.zeros(1, 2))


def test_a_meta_model_whose_buffers_are_meta_too_is_one_line():
    from dsrun.inference import shard_load

    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4))
    with pytest.raises(UsageError, match=r"buffer model.rotary_emb.inv_freq is on the meta device"):
        shard_load.materialize_local(model, torch.device("cpu"))


def test_a_model_with_an_expert_parallel_moe_layer_is_one_line(single_process):
    from dsrun.moe.layer import MoE

    model = nn.Sequential(MoE(4, nn.Linear(4, 4), num_experts=2, ep_size=2, rank=0, world_size=2))
    with pytest.raises(UsageError, match=r"^0 is an MoE layer built with ep_size=2: init_inference has no expert"):
        build(model)
