"""Owns configs: YAML files loaded with safe_load into plain nested dicts, inherited, overridden and validated.

Every key that exists is declared, with its default, in configs/anneal.yml.
A config file may name a `_base_` file (relative to itself) and overrides
only what differs; `--set a.b=c` overrides after that. Unknown keys and
wrong types are errors that name the key.
"""
from __future__ import annotations

import copy
import logging
import os

import yaml

from datasets.errors import HGMError
from datasets.files import write_text
from datasets.transforms import canonical_name

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
SCHEMA_FILE = os.path.join(CONFIG_DIR, "anneal.yml")

# Keys whose default is null: the type a non-null value must have.
NULLABLE = {
    "training.grad_clip": float,
    "training.sigma_min": float,
    "training.init_from": str,
    "data.path": str,
    "test.data_path": str,
    "test.checkpoint": str,
    "test.step_scale": float,
    "test.sigma_start": float,
    "test.hole_sigma_start": float,
    "test.hole_prior": str,
    "test.hole_n_steps_each": int,
    "test.hole_init": str,
    "test.noise_start_ratio": float,
    "test.noise_step_total": float,
    "test.image_size": int,
    "test.patch_size": int,
    "test.patch_batch": int,
    "test.progressive.prev_doc": str,
    "test.progressive.prev_folder": str,
    "test.progressive.prev_step_lr": float,
    "test.progressive.prev_n_steps_each": int,
    "test.noise_sigma": (float, int, str),  # a number or "auto" (datasets.noise.parse_noise_sigma checks it)
    "test.mask_threshold": float,
}


# Keys with a non-null default that also take another type: the types a value may have.
UNION = {
    "test.compile": (bool, str),  # true / false, or "auto" (runners.restore.compile_pays decides)
    "test.bf16": (bool, str),  # true / false, or "auto" (sampling.prior.native_bf16 decides)
    "test.tile_size": (int, str),  # pixels, 0 (never tile), or "auto" (from the prior's training crops)
}


# Configs that were merged into one file (they differed only in comments): old name -> new file.
RENAMED = {"demosaic_6ch.yml": "demosaic_paper.yml", "demosaic_12ch.yml": "demosaic_paper.yml",
           "inpaint_3ch.yml": "inpaint_paper.yml", "inpaint_6ch.yml": "inpaint_paper.yml"}


def resolve_config_path(name: str) -> str:
    """A path, or a file name (with or without .yml) under configs/ or one of its subfolders
    (configs/paper/, configs/history/), so a name keeps working when its file moves down."""
    for cand in (name, os.path.join(CONFIG_DIR, name), os.path.join(CONFIG_DIR, name + ".yml")):
        if os.path.isfile(cand):
            return cand
    if os.sep not in name and "/" not in name:
        file = name if name.endswith((".yml", ".yaml")) else name + ".yml"
        if file in RENAMED:
            logging.getLogger("hgm").info("config %s is now configs/paper/%s", file, RENAMED[file])
            file = RENAMED[file]
        found = sorted(os.path.join(CONFIG_DIR, d, file) for d in os.listdir(CONFIG_DIR)
                       if os.path.isfile(os.path.join(CONFIG_DIR, d, file)))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise HGMError(f"config {name!r} is ambiguous: {', '.join(found)}; give the path")
    raise HGMError(f"config {name!r} not found (looked for it as a path and under {CONFIG_DIR})")


# Pairs of keys that say the same thing in two forms; the layer given last (file, its base, --set)
# wins, and one layer that sets both is an error.
ALTERNATIVES = (("test.step_lr", "test.step_scale"), ("test.start_level", "test.sigma_start"))
ALTERNATIVE_KEYS = {k for pair in ALTERNATIVES for k in pair}


def settle_alternatives(cfg: dict) -> dict:
    """In a resolved config the form not in use is null (the second form wins where it is set, for
    the layers already dropped the other), so a written config.yml reads back as the same config."""
    for a, b in ALTERNATIVES:
        (sa, ka), (sb, kb) = a.split("."), b.split(".")
        if cfg[sb][kb] is not None:
            cfg[sa][ka] = None
        elif cfg[sa][ka] is None:
            raise HGMError(f"set {a} or {b} (both are null)")
    return cfg


def drop_replaced(base: dict, layer: dict, where: str) -> None:
    """Remove from `base` (nested) the alternative of every key `layer` (flat) sets."""
    for a, b in ALTERNATIVES:
        if a in layer and b in layer and layer[a] is not None and layer[b] is not None:
            raise HGMError(f"{where} sets both {a} and {b}; they say the same thing, keep one")
        for mine, other in ((a, b), (b, a)):
            if mine in layer:
                _pop_dotted(base, other)


def _pop_dotted(cfg: dict, key: str) -> None:
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.get(p)
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise HGMError(f"config {path} is not valid YAML: {e}".splitlines()[0]) from e
    except UnicodeDecodeError as e:
        raise HGMError(f"config {path} is not a text file (a YAML config is UTF-8 text)") from e
    if not isinstance(data, dict):
        raise HGMError(f"config {path} must hold a mapping, not {type(data).__name__}")
    return data


def read_config_file(path: str, _seen: tuple = ()) -> dict:
    """The explicit values of a config file, its `_base_` chain merged in."""
    path = os.path.abspath(path)
    if path in _seen:
        raise HGMError(f"config {path} inherits from itself")
    data = _read_yaml(path)
    base = data.pop("_base_", None)
    if base is None:
        drop_replaced({}, flatten(data), f"config {path}")
        return data
    base_path = os.path.join(os.path.dirname(path), base)
    if not os.path.isfile(base_path):
        base_path = resolve_config_path(base)
    if os.path.abspath(base_path) == os.path.abspath(SCHEMA_FILE):
        return data  # the schema's defaults are merged by load_config, not "explicit" values
    merged = read_config_file(base_path, _seen + (path,))
    drop_replaced(merged, flatten(data), f"config {path}")
    merge_into(merged, data)
    return merged


def merge_into(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge_into(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_dotted(cfg: dict, key: str, value: object) -> None:
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise HGMError(f"config key {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_set(items: list[str] | None) -> dict:
    """['a.b=1', 'c.d=x'] -> {'a.b': 1, 'c.d': 'x'} with YAML-typed values."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise HGMError(f"--set takes KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() != "" else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _type_name(t):
    if isinstance(t, tuple):
        return " or ".join(dict.fromkeys(_type_name(k) for k in t))
    return {float: "a number", int: "an integer", bool: "true/false", str: "a string",
            list: "a list"}.get(t, t.__name__)


def validate(cfg: dict, schema: dict) -> dict:
    """Check every key against the schema; returns cfg with ints widened to floats."""
    flat_schema = flatten(schema)
    sections = {k.rsplit(".", 1)[0] for k in flat_schema if "." in k}
    for key, value in flatten(cfg).items():
        if key not in flat_schema:
            if key in sections:
                raise HGMError(f"config key {key!r} is a section, not a value")
            near = [k for k in flat_schema if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise HGMError(f"unknown config key {key!r}{hint}")
        default = flat_schema[key]
        want = UNION.get(key) or (type(default) if default is not None else NULLABLE.get(key))
        if value is None:
            if default is None or key in ALTERNATIVE_KEYS:
                continue
            raise HGMError(f"config key {key!r} must be {_type_name(want)}, got null")
        if want is None:
            continue
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, str):
            try:  # YAML 1.1 reads "1e-5" (no dot) as a string
                value = float(value)
                set_dotted(cfg, key, value)
                ok = True
            except ValueError:
                pass
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            set_dotted(cfg, key, float(value))
            ok = True
        if not ok:
            raise HGMError(f"config key {key!r} must be {_type_name(want)}, got {value!r} "
                           f"({type(value).__name__})")
    return cfg


def schema() -> dict:
    return _read_yaml(SCHEMA_FILE)


def canonical_transform(explicit: dict, overrides: dict) -> None:
    """Transform aliases (rgbrgb, pool, ...) become their canonical names in place,
    so `--set data.transform=pool` agrees with the runner train_12ch_pool."""
    data = explicit.get("data")
    if isinstance(data, dict) and isinstance(data.get("transform"), str):
        data["transform"] = canonical_name(data["transform"])
    if isinstance(overrides.get("data.transform"), str):
        overrides["data.transform"] = canonical_name(overrides["data.transform"])


def _given_layers(name: str, overrides: dict | None) -> tuple[dict, dict]:
    """(the file's values with its bases', nested; the --set values, flat), transform names made
    canonical and the alternative that --set replaces dropped from the file's values."""
    explicit = read_config_file(resolve_config_path(name))
    overrides = dict(overrides or {})
    canonical_transform(explicit, overrides)
    drop_replaced(explicit, overrides, "--set")
    return explicit, overrides


def explicit_values(name: str, overrides: dict | None = None, fixed: dict | None = None) -> dict:
    """The values a user gave (the file and its bases, the runner name's options, --set), flat,
    without the schema's defaults: what restoration checks against a checkpoint."""
    explicit, overrides = _given_layers(name, overrides)
    return {**flatten(explicit), **(fixed or {}), **overrides}


def load_config(name: str, overrides: dict | None = None, fixed: dict | None = None) -> dict:
    """Resolve a config: schema defaults <- file (with _base_) <- fixed <- overrides.

    `fixed` are options a runner name implies (e.g. the transform); a file or an
    override that says otherwise is an error rather than silently ignored.
    """
    explicit, overrides = _given_layers(name, overrides)
    for src_name, src in (("config file", flatten(explicit)), ("--set", overrides or {})):
        for key, value in (fixed or {}).items():
            if key in src and src[key] != value:
                raise HGMError(f"{src_name} sets {key}={src[key]!r}, but the runner implies {key}={value!r}; "
                               f"drop the setting or use the generic runner")
    base = schema()
    cfg = merge_into(copy.deepcopy(base), explicit)
    for key, value in {**(fixed or {}), **(overrides or {})}.items():
        set_dotted(cfg, key, value)
    return check_model(settle_alternatives(validate(cfg, base)))


def check_model(cfg: dict) -> dict:
    """Model values the schema cannot check by type: widths and level counts are positive, noise levels fall."""
    m = cfg["model"]
    for key in ("ngf", "num_classes"):
        if m[key] < 1:
            raise HGMError(f"model.{key} must be at least 1, got {m[key]}")
    if not m["sigma_begin"] > m["sigma_end"] > 0:
        raise HGMError(f"model.sigma_begin ({m['sigma_begin']:g}) must be larger than model.sigma_end "
                       f"({m['sigma_end']:g}), and both positive")
    return cfg


def dump_config(cfg: dict, path: str, comment: str | None = None) -> None:
    """Write the resolved config; `comment` (main.py --comment) goes on top as YAML comment lines,
    so the file still loads as a config."""
    head = "".join(f"# comment: {line}\n" for line in (comment or "").splitlines())
    write_text(path, head + yaml.safe_dump(cfg, sort_keys=False))
