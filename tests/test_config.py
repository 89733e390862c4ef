"""Config loading: schema defaults, _base_ chains, --set overrides, runner-implied options."""
import os
import re

import pytest
import yaml

from datasets.errors import HGMError
from runners.config import SCHEMA_FILE, load_config, parse_set, read_config_file, resolve_config_path
from runners.registry import RUNNERS, resolve_runner

PAPER_TRAIN = ["train_6ch_rgbrgb", "train_12ch_pool", "train_3ch_rgb", "Anneal_runner_train_6ch_demoscaicking",
               "Anneal_runner_train_12ch_demoscaicking"]
PAPER_TEST = ["Test_3ch_inpainting_rgbrgb_256", "Test_6ch_inpainting_rgbrgb_256", "Test_12ch_inpainting_pool",
              "Test_6ch_inpainting_rgbrgb_p", "Test_12ch_inpainting_pool_p", "Test_6ch_demoscaicking_copy",
              "Test_6ch_demoscaicking_copy_p", "Test_12ch_demoscaicking_pool", "Test_12ch_demoscaicking_pool_p"]
COPY = {"data.transform": "channel_copy", "data.transform_factor": 2}


def write_yaml(path, data):
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return str(path)


def test_tiny_config_loads_with_schema_defaults():
    cfg = load_config("tiny.yml")
    assert cfg["training"]["batch_size"] == 4 and cfg["training"]["n_iters"] == 20
    assert cfg["model"]["ngf"] == 8 and cfg["data"]["image_size"] == 16
    # keys tiny.yml does not name come from the schema (anneal.yml)
    with open(SCHEMA_FILE) as f:
        schema = yaml.safe_load(f)
    assert cfg["optim"] == schema["optim"]
    assert cfg["model"]["sigma_begin"] == schema["model"]["sigma_begin"]
    assert cfg["data"]["path"] is None
    assert "_base_" not in cfg
    assert set(cfg) == set(schema)


def test_config_name_forms(tmp_path):
    assert load_config("tiny") == load_config("tiny.yml") == load_config(resolve_config_path("tiny.yml"))
    with pytest.raises(HGMError, match="not found"):
        load_config(str(tmp_path / "nope.yml"))


def test_parse_set_yaml_typing():
    got = parse_set(["a.i=3", "a.f=1.5", "a.e=1.0e-3", "a.t=true", "a.F=False", "a.n=null", "a.tilde=~",
                     "a.empty=", "a.s=hello", "a.q='12'", "a.eq=x=y", " a.sp = 7"])
    assert got == {"a.i": 3, "a.f": 1.5, "a.e": 0.001, "a.t": True, "a.F": False, "a.n": None, "a.tilde": None,
                   "a.empty": None, "a.s": "hello", "a.q": "12", "a.eq": "x=y", "a.sp": 7}
    assert type(got["a.i"]) is int and type(got["a.f"]) is float and type(got["a.t"]) is bool
    assert parse_set(None) == {} and parse_set([]) == {}
    with pytest.raises(HGMError, match="KEY=VALUE"):
        parse_set(["training.n_iters"])


def test_overrides_are_applied_and_typed():
    cfg = load_config("tiny.yml", parse_set(["training.n_iters=7", "optim.lr=0.0002", "data.augment=false",
                                             "data.path=some/dir", "training.grad_clip=null", "model.ngf=4"]))
    assert cfg["training"]["n_iters"] == 7
    assert cfg["optim"]["lr"] == 0.0002
    assert cfg["data"]["augment"] is False
    assert cfg["data"]["path"] == "some/dir"
    assert cfg["training"]["grad_clip"] is None
    assert cfg["model"]["ngf"] == 4
    # overrides beat the file
    assert load_config("tiny.yml", {"training.batch_size": 2})["training"]["batch_size"] == 2


def test_scientific_notation_without_a_dot_is_a_number():
    """PyYAML reads 1e-4 (no dot) as a string; for a number key it must still mean 0.0001."""
    cfg = load_config("tiny.yml", parse_set(["optim.lr=1e-4", "model.sigma_end=5E-3"]))
    assert cfg["optim"]["lr"] == pytest.approx(1e-4) and isinstance(cfg["optim"]["lr"], float)
    assert cfg["model"]["sigma_end"] == pytest.approx(5e-3)
    # ...but a string key keeps the text
    assert load_config("tiny.yml", parse_set(["data.path=1e-4"]))["data"]["path"] == "1e-4"


@pytest.mark.parametrize("key", ["optim.lr", "model.sigma_begin", "training.anneal_power", "training.grad_clip"])
def test_int_for_float_key_is_widened(key):
    cfg = load_config("tiny.yml", parse_set([f"{key}=2"]))
    section, name = key.split(".")
    assert cfg[section][name] == 2.0 and type(cfg[section][name]) is float


@pytest.mark.parametrize("item,key", [("training.nitters=5", "training.nitters"), ("foo.bar=1", "foo.bar"),
                                      ("model.ngf2=3", "model.ngf2"), ("extra=1", "extra")])
def test_unknown_key_is_named(item, key):
    with pytest.raises(HGMError) as e:
        load_config("tiny.yml", parse_set([item]))
    assert repr(key) in str(e.value) and "unknown" in str(e.value)


def test_unknown_key_in_a_file_is_named(tmp_path):
    path = write_yaml(tmp_path / "c.yml", {"_base_": "tiny.yml", "model": {"nfg": 4}})
    with pytest.raises(HGMError, match="'model.nfg'"):
        load_config(path)


def test_section_given_a_value_is_an_error():
    with pytest.raises(HGMError, match="'training'.*section"):
        load_config("tiny.yml", {"training": 5})


@pytest.mark.parametrize("item,key", [
    ("training.n_iters=abc", "training.n_iters"), ("training.n_iters=1.5", "training.n_iters"),
    ("training.n_iters=null", "training.n_iters"), ("model.ngf=true", "model.ngf"),
    ("data.augment=1", "data.augment"), ("optim.lr=fast", "optim.lr"), ("optim.lr=true", "optim.lr"),
    ("data.path=5", "data.path"), ("training.grad_clip=off", "training.grad_clip"),
    ("data.transform=[1, 2]", "data.transform")])
def test_wrong_type_is_named(item, key):
    with pytest.raises(HGMError) as e:
        load_config("tiny.yml", parse_set([item]))
    assert repr(key) in str(e.value)


def test_base_inheritance_chain(tmp_path):
    a = write_yaml(tmp_path / "a.yml", {"_base_": "tiny.yml", "model": {"ngf": 4},
                                        "training": {"n_iters": 3}})
    os.makedirs(tmp_path / "sub")
    b = write_yaml(tmp_path / "sub" / "b.yml", {"_base_": "../a.yml", "training": {"n_iters": 5}})
    cfg = load_config(b)
    assert cfg["training"]["n_iters"] == 5        # b
    assert cfg["model"]["ngf"] == 4               # a
    assert cfg["training"]["batch_size"] == 4     # tiny
    assert cfg["data"]["image_size"] == 16        # tiny
    assert cfg["model"]["num_classes"] == 10      # anneal.yml (the schema)
    assert cfg["training"]["log_freq"] == 5       # tiny, sibling of an overridden key in the same section
    explicit = read_config_file(b)
    assert "_base_" not in explicit and explicit["training"]["n_iters"] == 5
    assert load_config(a)["training"]["n_iters"] == 3


def test_base_cycle_is_an_error(tmp_path):
    write_yaml(tmp_path / "x.yml", {"_base_": "y.yml"})
    write_yaml(tmp_path / "y.yml", {"_base_": "x.yml"})
    with pytest.raises(HGMError, match="inherits from itself"):
        load_config(str(tmp_path / "x.yml"))


def test_bad_yaml_and_non_mapping(tmp_path):
    (tmp_path / "bad.yml").write_text("training: [1, 2\n")
    with pytest.raises(HGMError, match="not valid YAML"):
        load_config(str(tmp_path / "bad.yml"))
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(HGMError, match="mapping"):
        load_config(str(tmp_path / "list.yml"))


def test_runner_fixed_options_are_applied():
    _, _, fixed = resolve_runner("train_12ch_pool")
    cfg = load_config("tiny.yml", {}, fixed)
    assert cfg["data"]["transform"] == "pixel_scale" and cfg["data"]["transform_factor"] == 2
    # the schema's default transform (channel_copy) is not a contradiction of the 3-channel runner
    _, _, fixed = resolve_runner("train_3ch_rgb")
    assert load_config("tiny.yml", {}, fixed)["data"]["transform"] == "identity"


def test_runner_fixed_option_contradicted_by_override():
    with pytest.raises(HGMError) as e:
        load_config("tiny.yml", {"data.transform": "pixel_scale"}, COPY)
    assert "data.transform" in str(e.value) and "--set" in str(e.value)
    with pytest.raises(HGMError, match="data.transform_factor"):
        load_config("tiny.yml", {"data.transform_factor": 3}, COPY)
    # agreeing is fine
    assert load_config("tiny.yml", {"data.transform": "channel_copy"}, COPY)["data"]["transform"] == "channel_copy"


def test_runner_fixed_option_contradicted_by_file(tmp_path):
    path = write_yaml(tmp_path / "pool.yml", {"_base_": "tiny.yml", "data": {"transform": "pixel_scale"}})
    with pytest.raises(HGMError) as e:
        load_config(path, {}, COPY)
    assert "data.transform" in str(e.value) and "config file" in str(e.value)
    # ...also when the contradiction comes from the file's _base_
    child = write_yaml(tmp_path / "child.yml", {"_base_": "pool.yml", "model": {"ngf": 4}})
    with pytest.raises(HGMError, match="data.transform"):
        load_config(child, {}, COPY)
    agree = write_yaml(tmp_path / "copy.yml", {"_base_": "tiny.yml", "data": {"transform": "channel_copy"}})
    assert load_config(agree, {}, COPY)["data"]["transform"] == "channel_copy"


@pytest.mark.parametrize("name", PAPER_TRAIN + PAPER_TEST)
def test_every_paper_runner_name_resolves_case_insensitively(name):
    canonical, kind, fixed = resolve_runner(name)
    assert canonical == name
    for variant in (name.lower(), name.upper(), name.swapcase()):
        assert resolve_runner(variant) == (canonical, kind, fixed)
    assert kind == ("train" if name in PAPER_TRAIN else "restore")
    channels = re.search(r"_(\d+)ch_", name).group(1)
    want_transform = {"3": "identity", "6": "channel_copy", "12": "pixel_scale"}[channels]
    assert fixed["data.transform"] == want_transform
    if want_transform != "identity":
        assert fixed["data.transform_factor"] == 2
    if kind == "restore":
        assert fixed["test.task"] == ("inpaint" if "inpainting" in name else "demosaic")
        assert fixed.get("test.progressive.enabled", False) is name.endswith("_p")


@pytest.mark.parametrize("name", PAPER_TRAIN + PAPER_TEST)
def test_runner_options_are_valid_config(name):
    _, _, fixed = resolve_runner(name)
    cfg = load_config("tiny.yml", {}, fixed)
    assert cfg["data"]["transform"] == fixed["data.transform"]


def test_resolve_runner_returns_a_copy():
    _, _, fixed = resolve_runner("train_6ch_rgbrgb")
    fixed["data.transform"] = "pixel_scale"
    assert resolve_runner("train_6ch_rgbrgb")[2]["data.transform"] == "channel_copy"


@pytest.mark.parametrize("bad", ["train_24ch", "", "Test_6ch", "train_6ch_rgbrgb "])
def test_unknown_runner_lists_valid_names(bad):
    with pytest.raises(HGMError) as e:
        resolve_runner(bad)
    msg = str(e.value)
    assert repr(bad) in msg
    for name in PAPER_TRAIN + PAPER_TEST + list(RUNNERS):
        assert name in msg


def test_transform_aliases_agree_with_the_runner():
    from runners.config import load_config, parse_set
    from runners.registry import resolve_runner
    _, _, fixed = resolve_runner("train_12ch_pool")
    cfg = load_config("tiny.yml", parse_set(["data.transform=pool"]), fixed)
    assert cfg["data"]["transform"] == "pixel_scale"
