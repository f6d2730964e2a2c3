"""Typed run configuration: dataclasses that double as the YAML schema and the CLI flags.

A run is fully described by one `RunConfig`. YAML files and `--section.key value` overrides
are validated against these dataclasses: unknown keys get a "did you mean" hint, values are
type-checked, and ranges are checked in `validate()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import XlingError
from .recipes import config_path


@dataclass
class CorpusConfig:
    """Where a language's text comes from."""

    name: str = "bible"  # "bible" (built-in parallel Bibles), "text" (local files) or "jsonl"
    translation: str = "web"  # bible only: web, kjv, lsg, darby, rv1909, elberfelder, ...
    books: str = "all"  # bible only: all | odd | even (disjoint content for two languages)
    paths: list[str] = field(default_factory=list)  # text / jsonl: files or directories
    doc_per_line: bool = False  # text only: one document per line instead of per file
    text_field: str = "text"  # jsonl only: the field that holds the document text


@dataclass
class TokenizerConfig:
    """How text becomes ids (SentencePiece BPE with byte fallback, trained on the train split)."""

    vocab_size: int = 4096  # per language: a clone doubles the model's vocabulary, so each language has its own


@dataclass
class LanguagesConfig:
    """The paper's core knob: which languages, and how often each appears in training."""

    kind: str = "clone"  # "clone" (duplicated vocabulary) or "real" (a second corpus)
    num_clones: int = 1  # clone only: number of cloned languages besides the base language
    frac_clone: float = 1.0  # clone only: fraction of ids that are cloned (rest are shared anchors)
    p: float = 0.1  # total probability that a training sequence is a non-base language
    schedule: str = ""  # e.g. "0.1_0.9": K equal stages of training, each with its own p
    second: CorpusConfig = field(default_factory=lambda: CorpusConfig(translation="lsg"))  # real only
    vocab: str = "disjoint"  # real only: disjoint | anchored | joint (one tokenizer for both)
    names: list[str] = field(default_factory=list)  # display names; default EN1, EN2, ... / EN, FR


@dataclass
class ModelConfig:
    """The GPT's shape: a named preset (the paper's sizes or CPU sizes), any field overridden."""

    preset: str = "cpu-s"  # see PRESETS below; explicit fields override it
    n_layers: int = 0  # transformer blocks (0: the preset's)
    d_model: int = 0  # residual width (0: the preset's)
    n_heads: int = 0  # attention heads; d_model must divide by it (0: the preset's)
    d_mlp: int = 0  # MLP hidden width (0: the preset's, else 4 * d_model)
    seq_len: int = 128  # training context length (the position table has this many entries)


@dataclass
class TrainConfig:
    """Optimisation (the paper's Adam, warm-up + cosine) and how a run is logged and checkpointed."""

    seed: int = 0  # decides the initial weights, the language of every sequence and the data order
    steps: int = 0  # 0: derived from data_fraction (one pass over the training tokens)
    data_fraction: float = 1.0  # fraction of the reference token budget (monolingual ladders)
    batch_size: int = 32  # sequences per optimiser step
    grad_accum: int = 1  # micro-batches per step (batch_size must divide evenly)
    lr: float = 2e-3  # peak learning rate, reached after the warm-up
    min_lr: float = 2e-5  # the cosine decay ends here at the last step
    warmup: int = 50  # steps of linear warm-up
    clip: float = 0.0  # 0 disables gradient clipping (as in the paper)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast dtype)
    log_every: int = 10  # steps between metric records (one host sync each)
    eval_every: int = 0  # 0: validation only at the end
    checkpoint_every: int = 100  # steps between checkpoints: how much a kill can lose
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # torch.compile the transformer blocks (GPU: faster; CPU: a long compile first)


@dataclass
class EvalConfig:
    """The paper's evaluation protocol: overlapping windows, only their last tokens scored."""

    window: int = 128  # evaluation window (at most model.seq_len)
    last_n: int = 32  # windows advance by last_n; only their last last_n targets are scored
    max_tokens: int = 0  # 0: the whole test split; otherwise a prefix of each language's stream
    batch_size: int = 32  # windows per forward pass (memory, not results)


@dataclass
class RunConfig:
    """Everything that decides a run: two runs with equal configs train the same model."""

    name: str = ""  # display name (and the default run directory); not part of a run's identity
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    languages: LanguagesConfig = field(default_factory=LanguagesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- building


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(options)})"


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check `value` against the annotated type; ints are accepted where floats are expected."""
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise XlingError(f"{where} must be a mapping of keys, got {value!r}")
        return _build(typ, value, where)
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        (item,) = typing.get_args(typ)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. a schedule written without quotes
    if typ in (int, float, str, bool) and not (isinstance(value, typ) and not (typ is int and isinstance(value, bool))):
        raise XlingError(f"{where} must be of type {typ.__name__}, got {value!r}")
    return value


def _build(cls, data: dict, where: str = "config"):
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            raise XlingError(f"unknown key '{where}.{key}'{_suggest(key, types_)}".replace("config.", "", 1))
        kwargs[key] = _coerce(value, types_[key], f"{where}.{key}".replace("config.", "", 1))
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> RunConfig:
    return _build(RunConfig, data or {})


def parse_override_value(text: str) -> Any:
    """`--train.steps 2000` -> 2000; `--languages.schedule 0.1_0.9` stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted keys (`train.steps`) in a nested dict; unknown keys are caught by `from_dict`."""
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise XlingError(f"--{dotted}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise XlingError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise XlingError(f"malformed YAML in {path}{where}: fix the syntax") from None
    except UnicodeDecodeError:
        raise XlingError(f"{path} is not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise XlingError(f"{path} must hold a mapping of config sections, not {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file (a path or a packaged config's name), then the overrides; validated."""
    data = load_yaml(config_path(path)) if path else {}
    cfg = from_dict(apply_overrides(data, overrides or {}))
    validate(cfg)
    return cfg


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------- model dimensions


@dataclass(frozen=True)
class ModelDims:
    """A model's shape, resolved from a ModelConfig and the run's vocabulary."""

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    seq_len: int
    vocab_size: int


# name: (layers, width, heads, mlp width). Paper sizes first, then CPU-scale sizes.
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "mini": (4, 512, 8, 2048),
    "tiny": (4, 768, 12, 3072),
    "small": (12, 768, 12, 3072),
    "medium": (24, 1024, 16, 4096),
    "cpu-xs": (2, 64, 2, 256),
    "cpu-s": (4, 128, 4, 512),
    "cpu-m": (4, 256, 4, 1024),
    "cpu-l": (6, 384, 6, 1536),
}


def resolve_model(cfg: ModelConfig, vocab_size: int) -> ModelDims:
    """Preset dimensions, with any explicitly set (non-zero) field of `cfg` overriding them."""
    if cfg.preset not in PRESETS and not all((cfg.n_layers, cfg.d_model, cfg.n_heads)):
        raise XlingError(f"unknown model.preset '{cfg.preset}': choose one of {', '.join(PRESETS)}")
    n_layers, d_model, n_heads, d_mlp = PRESETS.get(cfg.preset, (0, 0, 0, 0))
    n_layers = cfg.n_layers or n_layers
    d_model = cfg.d_model or d_model
    n_heads = cfg.n_heads or n_heads
    d_mlp = cfg.d_mlp or d_mlp or 4 * d_model
    if d_model % n_heads:
        raise XlingError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads})")
    if not 2 <= cfg.seq_len <= 65536:
        raise XlingError(f"model.seq_len must be between 2 and 65536, got {cfg.seq_len}")
    return ModelDims(n_layers, d_model, n_heads, d_mlp, cfg.seq_len, vocab_size)


# --------------------------------------------------------------------------- schedules


def parse_schedule(text: str) -> list[float]:
    """'0.1_0.9' -> [0.1, 0.9]: K equal stages of training, each with its own total p."""
    parts = str(text).strip().split("_")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise XlingError(
            f"malformed schedule '{text}': write stage probabilities joined by '_', e.g. 0.1_0.9"
        ) from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise XlingError(f"schedule '{text}' has probabilities outside [0, 1]: {bad}")
    return values


# --------------------------------------------------------------------------- validation


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise XlingError(message)


def validate(cfg: RunConfig) -> None:
    """Range and consistency checks that types alone cannot express."""
    lang, tr, ev = cfg.languages, cfg.train, cfg.eval
    _check(lang.kind in ("clone", "real"), f"languages.kind must be 'clone' or 'real', got '{lang.kind}'")
    _check(0.0 <= lang.p <= 1.0, f"languages.p must be in [0, 1], got {lang.p}")
    _check(0.0 <= lang.frac_clone <= 1.0, f"languages.frac_clone must be in [0, 1], got {lang.frac_clone}")
    _check(1 <= lang.num_clones <= 64, f"languages.num_clones must be between 1 and 64, got {lang.num_clones}")
    _check(lang.vocab in ("disjoint", "anchored", "joint"),
           f"languages.vocab must be disjoint, anchored or joint, got '{lang.vocab}'")
    if lang.kind == "real":
        _check(lang.num_clones == 1, "languages.num_clones applies to kind 'clone' only; a real pair has 2 languages")
    if lang.schedule:
        parse_schedule(lang.schedule)
    n_langs = num_languages(cfg)
    _check(not lang.names or len(lang.names) == n_langs,
           f"languages.names has {len(lang.names)} names but the run has {n_langs} languages")
    for corpus, where in ((cfg.corpus, "corpus"), (lang.second, "languages.second")):
        _check(corpus.name in ("bible", "text", "jsonl"),
               f"{where}.name must be bible, text or jsonl, got '{corpus.name}'")
        _check(corpus.books in ("all", "odd", "even"), f"{where}.books must be all, odd or even, got '{corpus.books}'")
    _check(cfg.tokenizer.vocab_size >= 300, f"tokenizer.vocab_size must be at least 300 (byte fallback needs 259 ids), got {cfg.tokenizer.vocab_size}")
    _check(cfg.tokenizer.vocab_size <= 65536, f"tokenizer.vocab_size must be at most 65536, got {cfg.tokenizer.vocab_size}")
    dims = resolve_model(cfg.model, vocab_size=1)
    _check(tr.steps >= 0, f"train.steps must be >= 0, got {tr.steps}")
    _check(0.0 < tr.data_fraction <= 100.0, f"train.data_fraction must be in (0, 100], got {tr.data_fraction}")
    _check(tr.batch_size >= 1 and tr.grad_accum >= 1, "train.batch_size and train.grad_accum must be >= 1")
    _check(tr.batch_size % tr.grad_accum == 0,
           f"train.batch_size ({tr.batch_size}) must be divisible by train.grad_accum ({tr.grad_accum})")
    _check(tr.lr > 0 and 0 <= tr.min_lr <= tr.lr, "train.lr must be > 0 and train.min_lr in [0, lr]")
    _check(tr.warmup >= 0 and tr.clip >= 0, "train.warmup and train.clip must be >= 0")
    _check(tr.precision in ("auto", "fp32", "bf16", "fp16"), f"train.precision must be auto, fp32, bf16 or fp16, got '{tr.precision}'")
    _check(tr.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got '{tr.device}'")
    _check(tr.log_every >= 1 and tr.checkpoint_every >= 1 and tr.eval_every >= 0,
           "train.log_every and train.checkpoint_every must be >= 1, train.eval_every >= 0")
    _check(2 <= ev.window <= dims.seq_len,
           f"eval.window ({ev.window}) must be between 2 and model.seq_len ({dims.seq_len})")
    _check(1 <= ev.last_n <= ev.window - 1, f"eval.last_n must be between 1 and eval.window - 1 ({ev.window - 1}), got {ev.last_n}")
    _check(ev.max_tokens >= 0 and ev.batch_size >= 1, "eval.max_tokens must be >= 0 and eval.batch_size >= 1")


def num_languages(cfg: RunConfig) -> int:
    return 1 + cfg.languages.num_clones if cfg.languages.kind == "clone" else 2
