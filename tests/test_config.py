"""Config: YAML + dotted overrides, type and range checks with messages that say what to fix."""

import dataclasses

import pytest
import yaml

from xling import yamlio
from xling.config import ModelConfig, apply_overrides, from_dict, load_config, to_dict, validate
from xling.errors import XlingError


def test_defaults_validate():
    cfg = load_config()
    assert cfg.languages.kind == "clone" and cfg.model.preset == "cpu-s"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("languages:\n  p: 0.5\ntrain:\n  steps: 10\n")
    cfg = load_config(path, {"train.steps": 20, "languages.names": yamlio.parse_value("[A, B]")})
    assert cfg.languages.p == 0.5 and cfg.train.steps == 20 and cfg.languages.names == ["A", "B"]


def test_unknown_key_suggests_the_closest():
    with pytest.raises(XlingError, match=r"unknown key 'train.setps' \(did you mean 'train.steps'\?\)"):
        from_dict({"train": {"setps": 3}})
    with pytest.raises(XlingError, match="did you mean 'languages'"):
        from_dict({"langauges": {}})
    with pytest.raises(XlingError, match=r"unknown key 'model.steps' \(did you mean 'train.steps'\?\)"):
        from_dict({"model": {"steps": 3}})  # a key in another section
    with pytest.raises(XlingError, match=r"unknown key 'steps' \(did you mean 'train.steps'\?\)"):
        from_dict({"steps": 3})  # a key without its section
    with pytest.raises(XlingError, match=r"unknown key 'model.preset' \(in a file, write it nested: model: "):
        from_dict({"model.preset": "cpu-xs"})  # a dotted key at the top of a file (it used to suggest itself)
    with pytest.raises(XlingError, match=r"write it nested: languages: \{second: \{translation: \.\.\.\}\}\)"):
        from_dict({"languages.second.translation": "lsg"})


def test_types_are_checked_and_ints_widen_to_floats():
    assert from_dict({"languages": {"p": 1}}).languages.p == 1.0
    with pytest.raises(XlingError, match=r"train.steps must be of type int"):
        from_dict({"train": {"steps": "many"}})
    with pytest.raises(XlingError, match=r"train.steps must be of type int"):
        from_dict({"train": {"steps": True}})
    import numpy as np  # a notebook's numbers: NumPy's integers and floats are plain ones in the config

    cfg = from_dict({"train": {"steps": np.int64(20)}, "languages": {"p": np.float32(0.25)}})
    assert (cfg.train.steps, cfg.languages.p) == (20, 0.25) and type(cfg.train.steps) is int
    with pytest.raises(XlingError, match=r"train.steps must be of type int"):
        from_dict({"train": {"steps": np.float64(2.5)}})
    with pytest.raises(XlingError, match=r"train.lr is too large, got 1000.*000$"):  # not OverflowError
        from_dict({"train": {"lr": 10**400}})
    with pytest.raises(XlingError, match=r"train.seed must be between 0 and 4294967295, got 1000.{1,40}$"):
        validate(from_dict({"train": {"seed": 10**400}}))  # (the value shortened, not 401 digits)


def test_the_evaluation_follows_the_context_unless_given():
    def protocol(cfg):
        return to_dict(cfg)["eval"]["window"], to_dict(cfg)["eval"]["last_n"]  # as a run records it

    assert protocol(load_config()) == (128, 32)  # the defaults as they always were
    assert protocol(load_config(None, {"model.seq_len": 512})) == (512, 128)  # the paper's: a quarter of each window
    assert protocol(load_config(None, {"model.seq_len": 512, "eval.window": 256, "eval.last_n": 32})) == (256, 32)
    changed = load_config("clone-90-10")  # however the config is changed afterwards, it follows
    changed.model.seq_len = 64
    assert protocol(changed) == (64, 16) and protocol(dataclasses.replace(changed, model=ModelConfig(seq_len=256))) == (256, 64)
    recorded = from_dict(yaml.safe_load(yamlio.dump(to_dict(changed))))  # as config.yaml holds it: concrete
    assert (recorded.eval.window, recorded.eval.last_n) == (64, 16) and to_dict(recorded) == to_dict(changed)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"languages.p": 1.5}, "languages.p must be in"),
        ({"languages.frac_clone": -0.1}, "frac_clone must be in"),
        ({"languages.num_clones": 0}, "num_clones must be between"),
        ({"languages.num_clones": 1000}, "num_clones must be between"),
        ({"languages.schedule": "0.1_x"}, "malformed schedule"),
        ({"languages.kind": "dialect"}, "languages.kind"),
        ({"model.preset": "huge"}, "unknown model.preset"),
        ({"eval.window": 4096}, "eval.window"),
        ({"eval.window": 1}, "eval.window"),
        ({"train.batch_size": 10, "train.grad_accum": 3}, "divisible"),
        ({"tokenizer.vocab_size": 100}, "vocab_size must be between 300"),
        ({"train.precision": "int8"}, "train.precision"),
    ],
)
def test_range_errors(overrides, message):
    with pytest.raises(XlingError, match=message):
        load_config(None, overrides)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(XlingError, match=r"malformed YAML .* line"):
        load_config(path)


@pytest.mark.parametrize("text, says", [
    ("zz: " + "[" * 5000 + "1" + "]" * 5000 + "\n", "nested too deeply"),  # was a RecursionError
    ("? [a, b]\n: 1\n", "a key must be a name or a number"),  # was a TypeError (unhashable)
    ("train: {steps: " + "9" * 5000 + "}\n", "a number with too many digits"),  # was a ValueError
])
def test_crafted_yaml_is_one_line_not_a_traceback(tmp_path, text, says):
    path = tmp_path / "crafted.yaml"
    path.write_text(text)
    with pytest.raises(XlingError, match=f"malformed YAML in .*crafted.yaml.*: {says}"):
        load_config(path)


def test_override_of_a_value_as_a_section_is_an_error():
    with pytest.raises(XlingError, match="not a section"):
        apply_overrides({"train": 3}, {"train.steps": 1})


def test_a_language_named_in_another_case_is_the_same_language(tmp_path):
    many = {"corpus": {"name": "bible"},
            "languages": {"kind": "real", "corpora": ["web", "lsg", "es"], "names": ["EN", "FR", "ES"],
                          "mix": {"EN": 0.5, "FR": 0.3, "ES": 0.2}}}
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(many))
    # an override in lower case replaces the share it names (it used to add a second key: shares summing to 1.8)
    cfg = load_config(path, {"languages.mix.fr": 0.2, "languages.mix.en": 0.6})
    assert cfg.languages.mix == {"EN": 0.6, "FR": 0.2, "ES": 0.2}
    for key, twice in (("mix", {"EN": 0.5, "fr": 0.2, "FR": 0.1, "ES": 0.2}),
                       ("transforms", {"FR": ["inverted"], "fr": ["permuted"]})):
        with pytest.raises(XlingError, match=f"languages.{key} names a language twice"):
            load_config(path, {f"languages.{key}": twice})


def test_one_split_of_a_dataset_is_written_with_an_at_sign_unless_the_path_exists(tmp_path):
    from xling.notation import dataset_split

    assert dataset_split("wikitext:wikitext-103-raw-v1@test") == ("wikitext:wikitext-103-raw-v1", "test")
    assert dataset_split("data/bench@validation") == ("data/bench", "validation")
    assert dataset_split("data/bench") == ("data/bench", "")
    (tmp_path / "ds@v2").mkdir()
    assert dataset_split(str(tmp_path / "ds@v2")) == (str(tmp_path / "ds@v2"), "")  # a folder named with '@'
    assert dataset_split("a@b/c") == ("a@b/c", "")
