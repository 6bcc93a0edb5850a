"""Study options that change the data or the patterns, and the checks on them."""

import dataclasses

import numpy as np
import pytest

from anatomy_jax.data import from_arrays
from anatomy_jax.experiment.options import DataOptions
from anatomy_jax.experiment.pattern_rate import PatternRateConfig
from anatomy_jax.poison import make_patterns
from anatomy_jax.train import TrainConfig, make_trainer


def test_flip_overrides_the_dataset_default():
    data = DataOptions().load_data()
    assert not data.flip_ok and not make_trainer(TrainConfig(), data).flip
    flipped = DataOptions(flip=True).load_data()
    assert flipped.flip_ok and make_trainer(TrainConfig(), flipped).flip
    assert not make_trainer(TrainConfig(augment=False), flipped).flip


def test_pattern_seed_changes_the_random_pattern_and_only_it():
    shape = (8, 8, 1)
    config = PatternRateConfig(seeds=(0,), pattern="random", patch_size=3)
    a = make_patterns([config.pattern_spec(shape)], shape).image
    b = make_patterns([dataclasses.replace(config, pattern_seed=1).pattern_spec(shape)], shape).image
    again = make_patterns([config.pattern_spec(shape)], shape).image
    assert not np.array_equal(a, b) and np.array_equal(a, again)


def test_npz_test_labels_must_occur_in_training():
    x = np.zeros((20, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match=r"test labels \[7\] never occur"):
        from_arrays(x, np.arange(20) % 3, x[:5], np.array([0, 1, 2, 7, 1]))


@pytest.mark.parametrize("field,value,message", [
    ("label_smoothing", 1.5, "label_smoothing must be in"),
    ("dtype", "float16", "unknown dtype"),
    ("width", 0.0, "width must be > 0"),
])
def test_train_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


def test_repeated_flags_collect_whole_values_in_order():
    from anatomy_jax.experiment.cli import build_parser, parse_config, resume_command
    from anatomy_jax.utils.fields import flag

    @dataclasses.dataclass(frozen=True)
    class Config:
        pattern_spec: tuple[str, ...] = flag(("solid:f=0.1",), "a pattern, one per flag", repeat=True)
        seeds: tuple[int, ...] = flag((0,), "seeds")
        out: str | None = flag(None, "output directory")

    argv = ["--pattern-spec", "checkerboard:f=0.1,0.2", "--seeds", "1,2", "--pattern-spec", "noise:f=0.3"]
    config = parse_config(Config, "test", argv)
    assert config.pattern_spec == ("checkerboard:f=0.1,0.2", "noise:f=0.3")  # replaced, not extended
    assert config.seeds == (1, 2)
    assert parse_config(Config, "test", []).pattern_spec == ("solid:f=0.1",)
    assert parse_config(Config, "test", ["--pattern-spec", "x"]) == Config(pattern_spec=("x",))
    help_text = build_parser(Config, "test").format_help()
    assert "--pattern-spec STR" in help_text and "a pattern, one per flag (repeatable; default:" in help_text
    command = resume_command("runs/x", ["--out", "old", *argv, "--resume"])
    assert command.endswith(" --pattern-spec checkerboard:f=0.1,0.2 --seeds 1,2 --pattern-spec noise:f=0.3 "
                            "--out runs/x --resume")


def test_repeat_needs_a_tuple_field():
    from anatomy_jax.experiment.cli import build_parser
    from anatomy_jax.utils.fields import flag

    with pytest.raises(ValueError, match="a repeated flag needs a tuple default, got 'a'"):
        flag("a", "one value", repeat=True)

    @dataclasses.dataclass(frozen=True)
    class Bad:
        name: str = dataclasses.field(default="a", metadata={"help": "h", "repeat": True})

    with pytest.raises(TypeError, match="must be tuple"):
        build_parser(Bad, "test")
