import pytest

from dsrun.config import find_config_in_args, load_config
from dsrun.errors import UsageError

DEEPSPEED_STYLE = """{
  // line comment
  "train_batch_size": 32,   # hash comment
  "url": "http://x//y#z",
  "fp16": {"enabled": true,},
  "reduce_bucket_size": 5e8,
}
"""


def test_json_as_deepspeed_reads_it(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(DEEPSPEED_STYLE)
    config = load_config(path)
    assert config["train_batch_size"] == 32
    assert config["url"] == "http://x//y#z"  # comment markers inside strings are data
    assert config["fp16"] == {"enabled": True}
    assert config["reduce_bucket_size"] == 500_000_000


def test_yaml(tmp_path):
    path = tmp_path / "ds.yaml"
    path.write_text("train_batch_size: 32\nfp16:\n  enabled: true\n")
    assert load_config(path) == {"train_batch_size": 32, "fp16": {"enabled": True}}


@pytest.mark.parametrize(("name", "text"), [("a.json", '{"a": 1, "a": 2}'), ("a.yaml", "a: 1\na: 2\n")])
def test_duplicate_keys_are_errors(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError, match="duplicate key 'a'"):
        load_config(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.json", '{"a": ', "is not valid JSON"),
        ("a.yaml", "a: [1, 2\n", "is not valid YAML"),
        ("a.json", "[1, 2]", "must hold a mapping"),
        ("a.yaml", "just text\n", "must hold a mapping"),
    ],
)
def test_bad_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "none.json")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "a.json"], "a.json"),
        (["--deepspeed_config=b.json", "--lr", "1"], "b.json"),
        (["--deepspeed", "--deepspeed_config", "c.yaml"], "c.yaml"),
        (["--lr", "1"], None),
        (["--config"], None),
    ],
)
def test_find_config_in_args(args, expected):
    assert find_config_in_args(args) == expected
