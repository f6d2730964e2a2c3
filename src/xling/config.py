"""Typed run configuration: dataclasses that double as the YAML schema and the CLI flags. YAML files and `--section.key
value` overrides are checked against them (unknown keys: a "did you mean" hint; values type-checked) and by `validate()`."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import numbers
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import yamlio
from .errors import XlingError
from .model_dims import resolve_model
from .notation import NAME_RULE, apply_overrides, books_part, flatten, is_name, is_numpy_bool, parse_schedule
from .recipes import config_path
from .yamlio import load_file as load_yaml

# Validation rules live next to the fields they check (field metadata); `validate` applies them
# all, then the checks that relate several fields. Every float must also be finite.


def between(lo: float, hi: float, *, above: bool = False) -> dict:
    """A number in [lo, hi], or in (lo, hi] with above=True."""
    return {"between": (lo, hi, above)}


def one_of(*options: str) -> dict:
    return {"one_of": options}


NAME = {"name": True}  # letters, digits, '.', '_', '-'; not starting with '.' or '-' (it names files)
BOOKS = {"books": True}  # all, odd, even, disjoint, or I/N (data.bible.split_books says what each reads)
MAX = 10**9  # the upper bound of counts that have no natural one (steps, intervals)
# alignment (`xling align`): probe sequences for hidden states (the authors' 500) and for gradients (two backward
# passes each: 100 on a CPU; a paper-scale study's align-report takes 500), and the gradients' precision (auto: the
# authors', fp16 autocast on a GPU and fp32 on a CPU)
PROBE_SEQUENCES, GRAD_SEQUENCES, GRAD_PRECISIONS = 500, 100, ("auto", "fp32", "fp16")
PRECISIONS = ("fp32", "bf16", "fp16")  # what a model multiplies in (train.precision: auto or one of these)


@dataclass
class CorpusConfig:
    """Where a language's text comes from."""

    # built-in Bibles, local .txt, .jsonl (.gz, .zst), .parquet, or Hugging Face datasets (save_to_disk / local cache)
    name: str = field(default="bible", metadata=one_of("bible", "text", "jsonl", "parquet", "hf"))
    translation: str = "web"  # bible only: web, kjv, lsg, darby, rv1909, elberfelder, ... or a language code
    # bible only: disjoint content for two languages (odd, even) or many (disjoint; I/N: part I of the train books of N)
    books: str = field(default="all", metadata=BOOKS)
    paths: list[str] = field(default_factory=list)  # files or directories; hf: save_to_disk folders or NAME[:CONFIG]
    doc_per_line: bool = False  # text only: one document per line instead of per file
    text_field: str = "text"  # jsonl, parquet, hf: the field / column that holds the document text
    # your own held-out files, like paths (both or neither; then paths are train only): a benchmark's own split; with
    # languages.corpora one per language, in its order. Neither: paths split 90/5/5 by a hash of each document's text
    valid: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


@dataclass
class TokenizerConfig:
    """How text becomes ids (SentencePiece BPE with byte fallback, trained on the train split), or a tokenizer you bring."""

    # per language (a clone doubles the model's vocabulary); byte fallback alone needs 259 ids
    vocab_size: int = field(default=4096, metadata=between(300, 65536))
    # an existing tokenizer for the base language (a joint vocabulary: both), used as it is instead of
    # training one (vocab_size then does not apply): a SentencePiece .model file or a Hugging Face tokenizer.json
    path: str = ""
    second_path: str = ""  # the same for the second language of a real pair (vocab disjoint or anchored)


@dataclass
class LanguagesConfig:
    """The paper's core knob: which languages, and how often each appears in training."""

    kind: str = field(default="clone", metadata=one_of("clone", "real"))  # duplicated vocabulary, or a second corpus
    num_clones: int = field(default=1, metadata=between(1, 64))  # clone only: cloned languages besides the base
    frac_clone: float = field(default=1.0, metadata=between(0, 1))  # clone only: share of cloned ids (rest: anchors)
    p: float = field(default=0.1, metadata=between(0, 1))  # total probability that a sequence is a non-base language
    schedule: str = ""  # e.g. "0.1_0.9": K equal stages of training, each with its own p
    second: CorpusConfig = field(default_factory=lambda: CorpusConfig(translation="lsg"))  # real only
    vocab: str = field(default="disjoint", metadata=one_of("disjoint", "anchored", "joint"))  # real only
    names: list[str] = field(default_factory=list, metadata=NAME)  # display names; default EN1, EN2, ... / EN, FR
    # clone only: a user-built id table (.npy, written by xling.Config.with_id_table) instead of the clone table
    table: str = ""
    # real only: many languages, the first the base; instead of second. Bible translations or codes (web, lsg, es, ...),
    # or with your own corpus.name (text, jsonl, ...) one file or folder per language
    corpora: list[str] = field(default_factory=list)
    # with corpora: each language's share of the sequences ({en: 0.7, fr: 0.05, ...}, sum 1); none of these three: equal
    mix: dict[str, float] = field(default_factory=dict, metadata=between(0, 1))
    # with corpora: temperature sampling, shares proportional to (training tokens)^(1/T); 1: by size, larger: flatter
    temperature: float | None = field(default=None, metadata=between(0, 1e6, above=True))
    # with corpora: UniMax (Chung et al. 2023): equal shares, each language capped at this many passes over its text
    unimax_epochs: float | None = field(default=None, metadata=between(0, 1e6, above=True))
    # per language (EN2: [clone, inverted]): how it is made from its text, in order (data.transforms); clones: [clone]
    transforms: dict[str, list[str]] = field(default_factory=dict, metadata=one_of("clone", "inverted", "permuted"))


@dataclass
class ModelConfig:
    """The GPT's shape: a named preset (the paper's sizes or CPU sizes), any field overridden."""

    preset: str = "cpu-s"  # see model_dims.PRESETS; explicit fields override it
    n_layers: int = field(default=0, metadata=between(0, 1024))  # transformer blocks (0: the preset's)
    d_model: int = field(default=0, metadata=between(0, 65536))  # residual width (0: the preset's)
    n_heads: int = field(default=0, metadata=between(0, 1024))  # attention heads (0: the preset's)
    # width of each head (0: the preset's, or d_model / n_heads when either is set): the paper's mini has
    # 8 heads of 32, so its attention is 256 wide inside a 512-wide model
    d_head: int = field(default=0, metadata=between(0, 4096))
    d_mlp: int = field(default=0, metadata=between(0, 262144))  # MLP hidden width (0: the preset's, else 4 * d_model)
    seq_len: int = field(default=128, metadata=between(2, 65536))  # training context (the position table's size)


@dataclass
class TrainConfig:
    """Optimisation (the paper's Adam, warm-up + cosine) and how a run is logged and checkpointed."""

    # decides the initial weights, the language of every sequence and the data order
    seed: int = field(default=0, metadata=between(0, 2**32 - 1))
    steps: int = field(default=0, metadata=between(0, MAX))  # 0: derived from data_fraction
    # fraction of the reference token budget T (budget_tokens; monolingual ladders)
    data_fraction: float = field(default=1.0, metadata=between(0, 100, above=True))
    # T, the "1x" of data_fraction and of a report's training length, in tokens (whole steps); 0: one pass over the
    # base language's training text. The paper's 1x: 1,197,015,040 (18,265 steps of 128 x 512; medium 9,132 of 256)
    budget_tokens: int = field(default=0, metadata=between(0, 10**15))
    batch_size: int = field(default=32, metadata=between(1, 2**20))  # sequences per optimiser step
    grad_accum: int = field(default=1, metadata=between(1, 2**20))  # micro-batches per step (dividing batch_size)
    lr: float = field(default=2e-3, metadata=between(0, 10, above=True))  # peak learning rate, after the warm-up
    min_lr: float = field(default=2e-5, metadata=between(0, 10))  # the cosine decay ends here at the last step
    warmup: int = field(default=50, metadata=between(0, MAX))  # steps of linear warm-up
    clip: float = field(default=0.0, metadata=between(0, 1e6))  # 0 disables gradient clipping (as in the paper)
    precision: str = field(default="auto", metadata=one_of("auto", *PRECISIONS))  # autocast dtype
    log_every: int = field(default=10, metadata=between(1, MAX))  # steps between metric records (and at checkpoints)
    eval_every: int = field(default=0, metadata=between(0, MAX))  # 0: validation only at the end
    checkpoint_every: int = field(default=100, metadata=between(1, MAX))  # steps between checkpoints: what a kill loses
    # older checkpoints kept besides the last two: none, those at checkpoint_every x 1, 2, 4, 8, ...
    # (alignment over training: `xling align --checkpoints all`), or every one
    keep_checkpoints: str = field(default="last", metadata=one_of("last", "log", "all"))
    device: str = field(default="auto", metadata=one_of("auto", "cpu", "cuda"))
    compile: bool = False  # torch.compile the blocks, on a GPU the loss softmax too (GPU: faster; CPU: a long compile)


@dataclass
class EvalConfig:
    """The paper's evaluation protocol: overlapping windows, only their last tokens scored."""

    window: int = field(default=0, metadata=between(0, 65536))  # evaluation window (0: model.seq_len, at most that)
    # windows advance by last_n; their last last_n targets count (0: a quarter of the window, the paper's 128 of 512)
    last_n: int = field(default=0, metadata=between(0, 65535))
    # 0: the whole test split; otherwise a prefix of each language's stream (at least one window)
    max_tokens: int = field(default=0, metadata=between(0, 10**12))
    batch_size: int = field(default=32, metadata=between(1, 2**16))  # windows per forward pass (memory, not results)


@dataclass
class RunConfig:
    """Everything that decides a run: two runs with equal configs train the same model."""

    name: str = field(default="", metadata=NAME)  # display name and default run directory; not part of a run's identity
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


def _suggest(key: str, options, section: str) -> str:
    """A hint for an unknown key: the same key in another section, the closest valid one, or the valid ones."""
    keys = flatten(to_dict(RunConfig()))
    if "." in key and not section and any(k.startswith(f"{key.split('.')[0]}.") for k in keys):  # `model.preset: x`
        return f" (in a file, write it nested: {': {'.join(key.split('.'))}: ...{'}' * key.count('.')})"
    elsewhere = [k for k in keys if (k.endswith(f".{key}") and not (section and k.startswith(section))) or k == key]
    close = elsewhere[:1] or [section + c for c in difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)]
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(options)})"


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Check `value` against the annotated type; ints are accepted where floats are expected."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):  # `float | None`: None means "not used"
        (inner,) = [t for t in typing.get_args(typ) if t is not type(None)]
        return None if value is None else _coerce(value, inner, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise XlingError(f"{where} must be a mapping (e.g. {{EN2: ...}}), got {reprlib.repr(value)}")
        _, item = typing.get_args(typ)
        return {str(k): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise XlingError(f"{where} must be a mapping of keys, got {reprlib.repr(value)}")
        return _build(typ, value, where)
    if origin is list:
        if not isinstance(value, list):
            value = list(value) if isinstance(value, tuple) else [value]
        (item,) = typing.get_args(typ)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if typ in (int, float) and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        try:
            return typ(value)  # (also NumPy's and pandas' integers, as a notebook hands them over)
        except OverflowError:
            raise XlingError(f"{where} is too large, got {reprlib.repr(value)}") from None
    if typ is float and isinstance(value, numbers.Real) and not isinstance(value, bool):  # (true is no learning rate)
        return float(value)
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. a schedule written without quotes
    if typ is bool and is_numpy_bool(value):
        return bool(value)
    if typ in (int, float, str, bool) and not (isinstance(value, typ) and not (typ is int and isinstance(value, bool))):
        kind = "a finite number" if typ is float else f"of type {typ.__name__}"
        raise XlingError(f"{where} must be {kind}, got {reprlib.repr(value)}")
    return value


def _build(cls, data: dict, where: str = "config"):
    types_, kwargs = _field_types(cls), {}
    for key, value in data.items():
        if key not in types_:
            section = f"{where}.".replace("config.", "", 1)
            raise XlingError(f"unknown key '{section}{key}'{_suggest(str(key), types_, section)}")
        kwargs[key] = _coerce(value, types_[key], f"{where}.{key}".replace("config.", "", 1))
    return cls(**kwargs)


def resolved(cfg: RunConfig) -> RunConfig:
    """The config as a run uses it: eval.window 0 is model.seq_len, eval.last_n 0 a quarter of the window (so a
    longer context is scored with the context it trained on, however the config was built or changed)."""
    window = cfg.eval.window or cfg.model.seq_len
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, window=window,
                                                             last_n=cfg.eval.last_n or max(1, window // 4)))


def to_dict(cfg: RunConfig) -> dict:
    """The config a run records and is identified by (resolved; `as_written` keeps 0: follow model.seq_len)."""
    return dataclasses.asdict(resolved(cfg))


def as_written(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> RunConfig:
    if {"base", "groups"} & set(data or {}) and "model" not in data:
        raise XlingError("this is a study (base, grid, groups), not a run config: xling study run FILE, or xling.Study")
    return _build(RunConfig, data or {})


def read_config_file(path: str | Path) -> dict:
    """A run config's YAML file (a path or a packaged config's name) as a mapping; a mistake in it names the file."""
    data = load_yaml(config_path(path))
    if {"base", "groups"} & set(data) and "model" not in data:  # (from_dict says so too, without the file's name)
        raise XlingError(f"{path} is a study file (base, grid, groups), not a run config: xling study run {path}")
    try:
        from_dict(copy.deepcopy(data))  # its own keys and types, before any override
    except XlingError as exc:
        raise XlingError(f"{path}: {exc}") from None
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file (a path or a packaged config's name), then the overrides; validated."""
    data = read_config_file(path) if path else {}
    keys = set(flatten(data)) - set(overrides or {})  # (before the overrides join them)
    cfg = from_dict(apply_overrides(data, overrides or {}))
    with naming_the_file(path, keys):
        validate(cfg)
    return cfg


@contextlib.contextmanager
def naming_the_file(path, keys: set[str]):
    """A validation error of a value a config file gave (one of `keys`) names the file, as its type errors do."""
    try:
        yield
    except XlingError as exc:
        if path and str(exc).split(" ", 1)[0] in keys:
            raise XlingError(f"{path}: {exc}") from None
        raise


def dump_yaml(cfg: RunConfig) -> str:
    return yamlio.dump(to_dict(cfg))


# --------------------------------------------------------------------------- validation

MAX_PARAMETERS = 20e9  # far beyond any CPU or single-node run; a typo in a size should not eat all memory


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise XlingError(message)


def _check_rules(section, where: str = "") -> None:
    """Apply the rules next to every field (between, one_of, NAME, BOOKS; to each entry of a mapping) and
    require finite floats."""
    types_ = _field_types(type(section))
    for f in dataclasses.fields(section):
        value, path = getattr(section, f.name), f"{where}{f.name}"
        if not dataclasses.is_dataclass(value):  # a value set in place is read as a file's would be
            coerced = _coerce(value, types_[f.name], path)  # (cfg.corpus.paths = "a.txt" is ["a.txt"], as in YAML)
            if coerced is not value:
                setattr(section, f.name, value := coerced)
        if dataclasses.is_dataclass(value):  # a section (set in place as a mapping: now its dataclass)
            _check_rules(value, f"{path}.")
            continue
        items = [(f"{path}.{k}", v) for k, v in value.items()] if isinstance(value, dict) else [(path, value)]
        for item_path, item in items:
            _check_value(f.metadata, item, item_path)
        if "name" in f.metadata:
            for name in value if isinstance(value, list) else [value] if value else []:
                _check(is_name(name), f"{path}: '{name}' is not a usable name: {NAME_RULE}")


def _check_value(rules: dict, value, path: str) -> None:
    _check(not isinstance(value, float) or math.isfinite(value), f"{path} must be a finite number, got {value}")
    if "between" in rules and value is not None:  # None: an optional field left unset
        lo, hi, above = rules["between"]
        ok = (lo < value if above else lo <= value) and value <= hi
        if isinstance(value, float):
            _check(ok, f"{path} must be in {'(' if above else '['}{lo:g}, {hi:g}], got {value:g}")
        else:
            _check(ok, f"{path} must be between {lo} and {hi}, got {reprlib.repr(value)}")
    for item in (value if isinstance(value, list) else [value]) if "one_of" in rules else []:
        options = rules["one_of"]
        _check(item in options, f"{path} must be {', '.join(options[:-1])} or {options[-1]}, got '{item}'")
    _check("books" not in rules or value in ("all", "odd", "even", "disjoint") or books_part(value) is not None,
           f"{path} must be all, odd or even (or I/N: part I of the training books dealt into N; disjoint: one part "
           f"per language of languages.corpora), got '{value}'")


def _check_many(cfg: RunConfig) -> None:
    """The keys of a run of many languages (languages.corpora), those that apply only to one, and transforms."""
    lang = cfg.languages
    for key in ("mix", "transforms"):  # language names match without regard to case (languages.mix.fr is FR)
        names = list(getattr(lang, key))
        _check(len({n.lower() for n in names}) == len(names), f"languages.{key} names a language twice (in any case): "
                                                              f"{names}")
    for name, steps in lang.transforms.items():
        _check(len(set(steps)) == len(steps), f"languages.transforms.{name} names a transform twice: {steps}")
        # clone on a real language is refused once the name resolves (data.mixture.Mixture.of)
    rules = [key for key in ("mix", "temperature", "unimax_epochs") if getattr(lang, key) not in (None, {})]
    if not lang.corpora:
        _check(not rules, f"languages.{rules[0] if rules else ''} sets the shares of languages.corpora (many "
                          "languages); a pair or clones mix by languages.p")
        _check("disjoint" not in (cfg.corpus.books, lang.second.books), "corpus.books: disjoint deals the training "
               "books to the languages of languages.corpora; for a pair use odd and even")
        return
    _check(lang.kind == "real", "languages.corpora lists real languages: set languages.kind real")
    _check(len(lang.corpora) >= 2, "languages.corpora needs at least two languages (the first is the base language)")
    _check(cfg.corpus.name == "bible" or not cfg.corpus.paths, "with languages.corpora each entry is one language's "
           "text (a file or folder): leave corpus.paths empty (for Bible translations set corpus.name bible)")
    held = cfg.corpus.valid, cfg.corpus.test
    _check(not any(held) or len(held[0]) == len(held[1]) == len(lang.corpora), "with languages.corpora, corpus.valid and "
           f".test list one held-out file or folder per language ({len(lang.corpora)}), in its order: got "
           f"{len(held[0])} in corpus.valid and {len(held[1])} in corpus.test")
    _check(not lang.schedule, "languages.schedule applies to languages.p; the shares of languages.corpora are static")
    _check(not cfg.tokenizer.second_path, "tokenizer.second_path is for languages.second; with languages.corpora "
                                          "every language trains its own tokenizer (or one joint: tokenizer.path)")
    _check(len(rules) <= 1, f"{' and '.join('languages.' + r for r in rules)} each set the shares: keep one (on the command "
                            "line --languages.mix '{}', --languages.temperature null or --languages.unimax_epochs null drops a file's)")
    # languages.mix's sum is checked with its names, once they resolve (data.mixture.Mixture.of)


def check_keys_apply(cfg: RunConfig) -> None:
    """Refuse a key that this kind of run or corpus would ignore without a word."""
    lang = cfg.languages
    _check(lang.kind == "clone" or lang.frac_clone == 1.0, "languages.frac_clone applies to kind 'clone' only (a "
           "pair shares by languages.vocab)")
    _check(lang.kind == "real" or lang.vocab == "disjoint", "languages.vocab applies to kind 'real' only (a clone "
           "shares ids by languages.frac_clone)")
    uses_second = lang.kind == "real" and not lang.corpora
    _check(uses_second or lang.second == LanguagesConfig().second, "languages.second is the second language of a "
           "real pair (kind real, no languages.corpora)")
    _check(not uses_second or cfg.corpus.name == "bible" or lang.second != LanguagesConfig().second, "languages.second "
           "is not set, so your text's partner would be the French Bible: set it ({name: bible, translation: fr}: that one)")
    _check(not lang.corpora or lang.p == LanguagesConfig().p, "languages.p mixes a pair or clones; languages.corpora "
           "mixes by languages.mix, temperature or unimax_epochs")
    _check(not lang.schedule or lang.p == LanguagesConfig().p, "languages.p does not apply with a languages.schedule: keep one")
    _check(not cfg.train.steps or cfg.train.data_fraction == TrainConfig().data_fraction, "train.data_fraction "
           "applies with train.steps 0 (the steps then follow from it): keep one")
    _check(not lang.corpora or cfg.corpus.translation == CorpusConfig().translation, "corpus.translation does not "
           "apply with languages.corpora: its first entry is the base language")
    for where, corpus in [("corpus", cfg.corpus)] + [("languages.second", lang.second)] * uses_second:
        bible = corpus.name == "bible"
        _check(not (bible and corpus.paths), f"{where}.paths is for your own text: set {where}.name (now bible)")
        _check(bible or corpus.books == "all", f"{where}.books applies to the built-in Bibles only, not {corpus.name}")
        _check(bible or corpus.paths or lang.corpora, f"{where}.paths is empty: list the files or folders of the "
                                                      f"{corpus.name} corpus")
        _check(not bible or not (corpus.valid or corpus.test), f"{where}.valid and .test are for your own text (the "
                                                               "Bibles are split by book): leave them out")
        _check(bool(corpus.valid) == bool(corpus.test), f"{where}.valid and {where}.test come together: give both "
                                                        f"(your held-out files) or neither (a 90/5/5 split of paths)")
        shared = set(corpus.paths) & set(corpus.valid + corpus.test) or set(corpus.valid) & set(corpus.test)
        _check(not shared, f"{sorted(shared)[0] if shared else ''} is in two of {where}.paths, .valid and .test: "
                           "each file belongs to one split")
        # defaults: web, and for languages.second lsg (web again where the section is written without it)
        defaults = ("web", LanguagesConfig().second.translation) if where == "languages.second" else ("web",)
        _check(bible or corpus.translation in defaults, f"{where}.translation is for the Bibles, not {corpus.name}")
        # not refused on the Bibles (their own format): a config of your text switched to them keeps these keys
        _check(corpus.name in ("text", "bible") or not corpus.doc_per_line, f"{where}.doc_per_line applies to name "
                                                                             f"text only, not {corpus.name}")
        _check(corpus.name != "text" or corpus.text_field == "text", f"{where}.text_field applies to jsonl, parquet "
                                                                     "and hf corpora, not text")
    # one language's held-out file that is the other's training text would score it on what the model trained on
    (train_a, held_a), (train_b, held_b) = (({*c.paths}, {*c.valid, *c.test}) for c in (cfg.corpus, lang.second))
    shared = sorted(held_a & train_b | held_b & train_a) if uses_second else []
    _check(not shared, f"{shared[0] if shared else ''} is held out for one language of corpus and languages.second and "
                       "is training text of the other: each file belongs to one split")
    tok, one = cfg.tokenizer, lang.kind == "clone" or lang.vocab == "joint"  # one tokenizer for every language
    all_brought = tok.path and (one or (uses_second and tok.second_path))
    _check(not all_brought or tok.vocab_size == TokenizerConfig().vocab_size, "tokenizer.vocab_size does not apply: "
           "every language's tokenizer is brought (tokenizer.path" + ("" if one else ", second_path")
           + f"): leave it out, or give its default {TokenizerConfig().vocab_size}")


def validate(cfg: RunConfig, recorded: bool = False) -> None:
    """Every field's own rule, then the checks that relate several fields. `recorded`: a run's own
    config.yaml, which may predate the refusal of keys a run ignores (it stays readable)."""
    _check_rules(cfg)
    lang, tr, ev = cfg.languages, cfg.train, resolved(cfg).eval
    _check(lang.kind == "clone" or lang.num_clones == 1, "languages.num_clones applies to kind 'clone' only")
    if cfg.tokenizer.second_path:
        _check(lang.kind == "real" and lang.vocab != "joint", "tokenizer.second_path is the second language's "
               "tokenizer of a real pair with vocab disjoint or anchored (a joint vocabulary: tokenizer.path)")
    _check_many(cfg)
    stages = len(parse_schedule(lang.schedule)) if lang.schedule else 1
    _check(recorded or stages <= (tr.steps or MAX), f"languages.schedule has {stages} stages, more than the {tr.steps} "
                                                    "training steps: give each stage a step (fewer stages, more steps)")
    if lang.table:  # its shape and values are checked when the tokenizer is known (data.languages.load_table)
        _check(lang.kind == "clone", "languages.table applies to kind 'clone' only (languages of one corpus)")
        _check(lang.frac_clone == 1.0, "languages.frac_clone does not apply with languages.table: "
                                       "share ids in the table itself")
    n_langs = num_languages(cfg)
    _check(not lang.names or len(lang.names) == n_langs,
           f"languages.names has {len(lang.names)} names but the run has {n_langs} languages")
    _check(len({n.lower() for n in lang.names}) == len(lang.names), f"languages.names has a name twice (in any case): "
                                                                     f"{lang.names}")
    dims = resolve_model(cfg.model, vocab_size=cfg.tokenizer.vocab_size * n_langs)
    parameters = dims.num_parameters()
    _check(parameters <= MAX_PARAMETERS, f"the model would have {parameters:.3g} parameters (at most "
                                         f"{MAX_PARAMETERS:.0e}): check model.n_layers, d_model and d_mlp")
    _check(tr.batch_size % tr.grad_accum == 0,
           f"train.batch_size ({tr.batch_size}) must be divisible by train.grad_accum ({tr.grad_accum})")
    step_tokens = tr.batch_size * dims.seq_len
    _check(tr.budget_tokens == 0 or tr.budget_tokens >= step_tokens, f"train.budget_tokens ({tr.budget_tokens}) is "
           f"less than one step ({tr.batch_size} x {dims.seq_len} tokens): give at least {step_tokens}, or 0 for one pass")
    _check(tr.min_lr <= tr.lr, f"train.min_lr ({tr.min_lr:g}) must not exceed train.lr ({tr.lr:g})")
    _check(2 <= ev.window <= dims.seq_len, f"eval.window ({ev.window}) must be between 2 and model.seq_len "
                                           f"({dims.seq_len}), or 0 to follow model.seq_len")
    _check(ev.last_n <= ev.window - 1, f"eval.last_n must be between 1 and eval.window - 1 ({ev.window - 1}), got "
                                       f"{ev.last_n}; 0: a quarter of the window")
    _check(ev.max_tokens == 0 or ev.max_tokens > ev.window,
           f"eval.max_tokens ({ev.max_tokens}) must be 0 (the whole split) or more than eval.window ({ev.window})")
    if not recorded:
        check_keys_apply(cfg)


def num_languages(cfg: RunConfig) -> int:
    return 1 + cfg.languages.num_clones if cfg.languages.kind == "clone" else len(cfg.languages.corpora) or 2
