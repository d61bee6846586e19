"""`import deepspeed` and `from deepspeed.X import Y` resolving to dsrun (dsrun --deepspeed-alias / python -m
dsrun.alias), in a fresh interpreter each: the alias changes sys.modules."""

import subprocess
import sys
import textwrap


def run_aliased(tmp_path, code: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, "-m", "dsrun.alias", str(script), "--flag"], capture_output=True,
                          text=True, timeout=120)


def test_deepspeed_modules_are_dsrun_modules(tmp_path):
    result = run_aliased(tmp_path, """
        import sys
        import deepspeed
        import dsrun
        import dsrun.accelerator, dsrun.runtime.utils, dsrun.zero
        from deepspeed.accelerator import get_accelerator
        from deepspeed.runtime.utils import set_random_seed, see_memory_usage
        from deepspeed.runtime.lr_schedules import WarmupLR
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus
        from deepspeed.utils import RepeatingLoader, logger, log_dist
        from deepspeed.runtime.dataloader import RepeatingLoader as Loader2
        import deepspeed.comm as dist
        assert deepspeed is dsrun
        assert sys.modules["deepspeed.accelerator"] is dsrun.accelerator  # one module: no duplicated state
        assert get_accelerator() is dsrun.accelerator.get_accelerator()
        assert ZeroParamStatus is deepspeed.zero.ZeroParamStatus and Loader2 is RepeatingLoader
        assert deepspeed.runtime.utils.set_random_seed is set_random_seed
        print("ARGV", sys.argv[1:], __name__)
    """)
    assert result.returncode == 0, result.stderr
    assert "ARGV ['--flag'] __main__" in result.stdout


def test_a_module_dsrun_lacks_is_one_line_naming_what_to_use(tmp_path):
    result = run_aliased(tmp_path, """
        try:
            from deepspeed.ops.adam import FusedAdam
        except ModuleNotFoundError as err:
            print("ERR", err)
        try:
            import deepspeed.sequence.layer
        except ModuleNotFoundError as err:
            print("ERR", err)
    """)
    assert result.returncode == 0, result.stderr
    first, second = [line for line in result.stdout.splitlines() if line.startswith("ERR")]
    assert "deepspeed.ops is not provided by dsrun" in first and "torch.optim.Adam/AdamW" in first
    assert "deepspeed.sequence is not provided by dsrun" in second and "deepspeed.accelerator" in second


def test_the_launcher_runs_scripts_through_the_alias(tmp_path):
    from dsrun.launcher.plan.world import LaunchSpec, command_for

    spec = LaunchSpec(script="train.py", script_args=["--x"], python="/py", deepspeed_alias=True)
    assert command_for(spec, 1) == ["/py", "-u", "-m", "dsrun.alias", "train.py", "--local_rank=1", "--x"]
    module = LaunchSpec(script="pkg.train", script_args=[], python="/py", module=True, deepspeed_alias=True)
    assert command_for(module, 0) == ["/py", "-u", "-m", "dsrun.alias", "-m", "pkg.train", "--local_rank=0"]


def test_init_inference_under_the_alias(tmp_path):
    result = run_aliased(tmp_path, """
        import deepspeed
        import dsrun.inference
        from deepspeed.inference.engine import InferenceEngine
        assert deepspeed.init_inference is dsrun.inference.init_inference
        assert InferenceEngine is dsrun.inference.InferenceEngine
        try:
            import deepspeed.inference.v2
        except ModuleNotFoundError as err:
            print("ERR", err)
    """)
    assert result.returncode == 0, result.stderr
    assert "deepspeed.inference.v2 is not provided by dsrun" in result.stdout and "init_inference" in result.stdout
