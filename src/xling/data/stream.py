"""From a run config to batches: tokenizers, token arrays, language tables and the batch stream.

Training text is cut into windows of seq_len + 1 tokens (stride seq_len, so every token is a
target once per pass). Each global row g of the run (row r of step s is g = s * batch + r) has a
language from the language plan; its window is the next unused window of that language's text
source, in a seeded per-epoch order. Everything is a pure function of (seed, g), so any process
can build any batch: resume and gradient accumulation see exactly the same data.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..errors import XlingError
from ..fsio import atomic_write, read_json
from . import languages as L
from . import transforms as T
from .corpora import language_corpora
from .heldout import warn_if_out_of_order
from .mixture import Mixture, language_plan, share_plan, tokens_per_language
from .prepare import source_tokenizers
from .token_arrays import token_array, token_array_paths
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

DATA_ORDER_STREAM = 2  # seeds the per-epoch window order (languages use stream 1)
_HIDDEN_ENDS_WARNED: set[str] = set()  # texts (token arrays) whose hidden sentence ends were warned of


def find_language(names: list[str], name: str) -> int:
    """Which of a run's languages `name` is (EN2 or en2: case does not matter, as in config keys); one error line
    if none."""
    if name in names:
        return names.index(name)
    found = [i for i, n in enumerate(names) if n.lower() == str(name).lower()]
    if len(found) != 1:
        what = f"'{name}' names more than one language (give its exact case)" if found else f"unknown language '{name}'"
        raise XlingError(f"{what}: this run has {', '.join(names)}")
    return found[0]


@dataclass
class LanguageSetup:
    """Everything a run needs to know about its languages."""

    names: list[str]
    table: torch.Tensor  # [n_languages, V]: base id -> model id per language
    model_vocab: int
    source_of_language: list[int]  # which text source each language reads (clones share source 0)
    tokenizers: list[Tokenizer]  # one per source
    corpora: list  # CorpusConfig per source
    cache_dir: Path | None = None
    # a trained run's languages (its own copies of tokenizers and table): a split that must be
    # encoded is encoded alone, so evaluating needs only that split's text; where it is
    # missing, this says whose text it is
    run: str | None = None
    from_run_copies: bool = False  # built from a trained run's own copies (not the cache, not the config)
    # per language, the transforms that move its tokens (data.transforms: inverted, permuted), in order
    word_orders: list[tuple[str, ...]] = field(default_factory=list)
    _arrays: dict = field(default_factory=dict, repr=False)
    _classes: dict = field(default_factory=dict, repr=False)

    @property
    def num_languages(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Which language `name` is (EN2 or en2: case does not matter, as in config keys); one error line if none."""
        return find_language(self.names, name)

    def text_ids(self, lang: int) -> torch.Tensor:
        """A boolean mask over the model's ids: those that write text in `lang` (its tokenizer's ids through its
        row of the table, shared anchors included, its padding not)."""
        tokenizer, row = self.tokenizer(lang), self.table[lang]
        mask = torch.zeros(self.model_vocab, dtype=torch.bool)
        mask[row[:tokenizer.vocab_size]] = True  # a shorter vocabulary's row is padded with id 0
        if tokenizer.pad_id is not None:  # a brought tokenizer may have none
            mask[int(row[tokenizer.pad_id])] = False
        return mask

    def tokenizer(self, lang: int) -> Tokenizer:
        return self.tokenizers[self.source_of_language[lang]]

    def eod(self, lang: int) -> int:
        """A language's end-of-document id (model id): its tokenizer's, through its row of the table."""
        return int(self.table[lang][self.tokenizer(lang).eod_id])

    def tokens(self, source: int, split: str) -> np.ndarray:
        """Base-id token array of one source and split (memmapped, cached on disk)."""
        key = (source, split)
        if key not in self._arrays:
            try:
                self._arrays[key] = token_array(self.corpora[source], split, self.tokenizers[source], self.cache_dir,
                                                alone=self.run is not None)
            except XlingError as exc:
                if self.run is None:
                    raise
                raise XlingError(f"{self.run} has its tokenizers, but the {split} text of its corpus is needed and "
                                 f"cannot be read: {exc}") from None
        return self._arrays[key]

    def training_text(self) -> dict[str, str]:
        """The SHA-256 of each text source's training tokens (as its token array's manifest has it), under the name
        of the first language that reads it: what a run trains on, which a resume checks has not changed."""
        digests = {}
        for source in dict.fromkeys(self.source_of_language):
            self.tokens(source, "train")  # (built, or checked against its manifest)
            path = token_array_paths(self.corpora[source], "train", self.tokenizers[source], self.cache_dir)[1]
            # (the manifest read directly: read_manifest would check the whole array's checksum once more)
            digests[self.names[self.source_of_language.index(source)]] = read_json(path)["sha256"]
        return digests

    def language_tokens(self, lang: int, split: str) -> torch.Tensor:
        """A language's whole split in model ids (e.g. EN2 test = EN1 test shifted), in its word order."""
        ids = self.ordered_tokens(lang, split).astype(np.int64)
        return self.table[lang][torch.from_numpy(ids)]

    def ordered_tokens(self, lang: int, split: str) -> np.ndarray:
        """A language's whole split in base ids and in its word order, transformed as one stream: training
        windows are cut from it, so they are windows of the text evaluation scores."""
        source, order = self.source_of_language[lang], self.word_order(lang)
        if not order:
            return self.tokens(source, split)
        key = (source, order, split)
        if key not in self._arrays:
            base, classes = self.tokens(source, split), self.piece_classes(source)
            self._warn_if_ends_hidden(lang, base, classes, order)
            self._arrays[key] = self._reordered(base, classes, order)
        return self._arrays[key]

    def _warn_if_ends_hidden(self, lang: int, base: np.ndarray, classes: T.PieceClasses, order: tuple[str, ...]):
        """One warning a process per language and text where its tokenizer writes many sentence ends against letters:
        its words then move across them."""
        text = f"{self.names[lang]}:{getattr(self.tokens(self.source_of_language[lang], 'train'), 'filename', '')}"
        if text in _HIDDEN_ENDS_WARNED:  # (said once, not for every split and run)
            return
        hidden = T.hidden_end_share(base, classes)
        if hidden > T.HIDDEN_ENDS_WARN_SHARE:
            _HIDDEN_ENDS_WARNED.add(text)
            log.warning(f"{self.names[lang]}'s tokenizer writes {hidden:.0%} of its sentence ends against letters "
                        f"(pieces such as '▁house.'): the words of those sentences move across them ({', '.join(order)})"
                        "; a tokenizer that splits punctuation from letters, as xling's own do, keeps each sentence's "
                        "words within it")

    @staticmethod
    def _reordered(base: np.ndarray, classes: T.PieceClasses, order: tuple[str, ...]) -> np.ndarray:
        """The reordered stream, cached on disk beside its token array (a pure function of the array and the
        transforms; the file name carries both and a version), so that every process of a run (study workers,
        DDP ranks, a resume) maps one copy instead of holding its own in memory (2 bytes a token). A cache it
        cannot write to (read-only, shared) gets the stream in memory."""
        filename = getattr(base, "filename", None)
        if not filename:
            return T.ordered_stream(base, classes, order)
        path = Path(f"{filename}.{'+'.join(order)}.v{T.ORDER_VERSION}")
        if not (path.is_file() and path.stat().st_size == base.nbytes):
            try:
                with atomic_write(path) as f:
                    for piece in T.ordered_chunks(base, classes, order):
                        f.write(piece.tobytes())
            except OSError:
                return T.ordered_stream(base, classes, order)
        return np.memmap(path, dtype=base.dtype, mode="r", shape=base.shape)

    def piece_classes(self, source: int) -> T.PieceClasses:
        """Word starts and fixed pieces of a source's tokenizer (data.transforms); refuses one without word starts."""
        if source not in self._classes:
            tok = self.tokenizers[source]
            self._classes[source] = T.piece_classes(tok.pieces(), [tok.eod_id, tok.pad_id, tok.unk_id])
        return self._classes[source]

    def word_order(self, lang: int) -> tuple[str, ...]:
        """The transforms that move a language's tokens (inverted, permuted), in order; () for none."""
        return self.word_orders[lang] if self.word_orders else ()

    def reorder(self, lang: int, base: np.ndarray) -> np.ndarray:
        """Rows of a language's base ids in its word order (data.transforms), or as they are."""
        order = self.word_order(lang)
        if not order:
            return base
        return T.apply_word_order(base, self.piece_classes(self.source_of_language[lang]), order)

    def to_model(self, lang: int, base) -> torch.Tensor:
        """Base ids of a language's text (one stream [L], or rows [B, L]) as the model sees that language: in
        its word order, then through its row of the id table."""
        base = np.asarray(base).astype(np.int64)
        return self.table[lang][torch.from_numpy(self.reorder(lang, base))]


def _check_saved_table(saved: dict, languages: int) -> None:
    """A run's own id table (received with the run, so checked like any input): a row of ids per language, every
    id one of the model's, and no more model ids than the table could use (a huge one would allocate a huge model)."""
    table, vocab = saved["table"], saved["model_vocab"]
    if not (isinstance(table, torch.Tensor) and table.ndim == 2 and table.shape[0] == languages and table.numel()
            and not table.is_floating_point() and int(table.min()) >= 0 and int(table.max()) < vocab <= table.numel()):
        raise XlingError(f"the id table in {saved['run']} does not fit the run ({languages} languages, model_vocab "
                         f"{vocab}): restore its tokenizers folder and run.json from a copy of the run")


def prepare_languages(cfg: RunConfig, cache_dir: Path | None = None, saved: dict | None = None) -> LanguageSetup:
    """The run's languages: tokenizers (trained and cached, or brought) and id table. `saved`: a
    trained run's own copies ({"tokenizers", "table", "model_vocab", "run"}), used instead."""
    lang = cfg.languages
    mix = Mixture.of(cfg)  # checks the per-language keys (mix, transforms)
    names, orders = list(mix.names), [mix.word_order(i) for i in range(len(mix.names))]
    sources = [0] * len(names) if lang.kind == "clone" else list(range(len(names)))
    if saved is not None:
        _check_saved_table(saved, len(names))
        return LanguageSetup(names, saved["table"], saved["model_vocab"], sources, saved["tokenizers"],
                             language_corpora(cfg), cache_dir, run=saved["run"], word_orders=orders,
                             from_run_copies=True)
    corpora, tokenizers = source_tokenizers(cfg, cache_dir)
    warn_if_out_of_order(cfg, corpora)
    if lang.kind == "clone":
        tok = tokenizers[0]
        table = L.clone_table(tok.vocab_size, lang.num_clones, lang.frac_clone, seed=cfg.train.seed, pad_id=tok.pad_id)
        model_vocab = tok.vocab_size * len(names)
        if lang.table:  # a user-built table (xling.Config.with_id_table) instead of the clone table
            table, model_vocab = L.load_table(lang.table, len(names), tok.vocab_size)
        if lang.transforms:  # a language without `clone` reads the base language's ids
            table = torch.stack([row if i == 0 or mix.cloned(i) else table[0] for i, row in enumerate(table)])
    elif lang.vocab == "joint":  # one tokenizer for every language (prepare.source_tokenizers)
        table = L.identity_table(tokenizers[0].vocab_size, len(names))
        model_vocab = tokenizers[0].vocab_size
    else:
        table, model_vocab = L.merge_tables([t.pieces() for t in tokenizers], lang.vocab, [t.pad_id for t in tokenizers])
    setup = LanguageSetup(names, table, model_vocab, sources, tokenizers, corpora, cache_dir, word_orders=orders)
    for lang in (lang for lang, order in enumerate(orders) if order):  # a tokenizer without word starts: now
        setup.piece_classes(sources[lang])
    return setup


def num_windows(n_tokens: int, seq_len: int) -> int:
    return max(0, (n_tokens - 1) // seq_len)


def pinned_budget_steps(cfg: RunConfig) -> int:
    """The whole steps of a pinned reference budget (train.budget_tokens), 0 where none is pinned."""
    return cfg.train.budget_tokens // (cfg.model.seq_len * cfg.train.batch_size)


def budget_steps(setup: LanguageSetup, cfg: RunConfig) -> int:
    """Steps in the reference budget T: train.budget_tokens in whole steps, or one pass over the base language's
    training windows."""
    seq_len, batch_size = cfg.model.seq_len, cfg.train.batch_size
    steps = num_windows(len(setup.tokens(0, "train")), seq_len) // batch_size
    if steps < 1:
        raise XlingError(
            f"the training split has fewer than {batch_size} windows of {seq_len} tokens: "
            "use more text, a smaller train.batch_size or a smaller model.seq_len"
        )
    return pinned_budget_steps(cfg) or steps


def run_mixture(cfg: RunConfig, setup: LanguageSetup, steps: int) -> Mixture:
    """The run's mixture with its shares known: temperature and UniMax from each language's training windows
    (one pass over its text, in tokens) and the run's training tokens."""
    mix = Mixture.of(cfg)
    if not mix.many:
        return mix
    seq_len = cfg.model.seq_len
    sizes = [num_windows(len(setup.tokens(source, "train")), seq_len) * seq_len for source in setup.source_of_language]
    return mix.resolve(sizes, steps * cfg.train.batch_size * seq_len)


def run_steps(cfg: RunConfig, setup: LanguageSetup) -> int:
    """train.steps if set, else data_fraction of the reference budget."""
    if cfg.train.steps:
        return cfg.train.steps
    full = budget_steps(setup, cfg)
    return max(1, round(cfg.train.data_fraction * full))


def training_plan(cfg: RunConfig, setup: LanguageSetup, steps: int, shares: dict | None = None
                  ) -> tuple[np.ndarray, Mixture]:
    """(the language of every training sequence of a run of `steps` steps, the run's mixture). `shares`: those a
    trained run recorded (run.json), so temperature and UniMax need not read the corpora's sizes again."""
    tr, lang = cfg.train, cfg.languages
    mix = Mixture.of(cfg) if shares else run_mixture(cfg, setup, steps)
    if mix.many:
        shares = [shares[name] for name in mix.names] if shares else mix.shares
        return share_plan(tr.seed, steps, tr.batch_size, shares), mix
    return language_plan(tr.seed, steps, tr.batch_size, lang.p, lang.schedule, setup.num_languages - 1), mix


def plan_tokens(plan: np.ndarray, step: int, cfg: RunConfig, names: list[str]) -> dict[str, int]:
    """{language: training tokens it had received} after `step` steps of a run with this plan: exact."""
    return dict(zip(names, tokens_per_language(plan, step * cfg.train.batch_size, len(names), cfg.model.seq_len)))


def tokens_trained(cfg: RunConfig, setup: LanguageSetup, steps: int, step: int, shares: dict | None = None
                   ) -> dict[str, int]:
    """{language: training tokens it had received} at `step` of a run of `steps` steps, from its plan."""
    return plan_tokens(training_plan(cfg, setup, steps, shares)[0], step, cfg, setup.names)


class TrainStream:
    """Deterministic training batches: `rows(start, stop)` -> (x, y, langs) for global rows."""

    @classmethod
    def of_run(cls, cfg: RunConfig, setup: LanguageSetup, steps: int) -> TrainStream:
        """The stream a run with this config trains on for `steps` steps."""
        plan, mix = training_plan(cfg, setup, steps)
        stream = cls(setup, plan, cfg.model.seq_len, cfg.train.seed)
        stream.mixture = mix
        return stream

    def __init__(self, setup: LanguageSetup, plan: np.ndarray, seq_len: int, seed: int):
        self.setup, self.plan, self.seq_len, self.seed = setup, plan, seq_len, seed
        self.mixture: Mixture | None = None  # of_run: the run's mixture, its shares resolved
        source_of_row = np.asarray(setup.source_of_language)[plan]
        self.source_of_row = source_of_row
        # The k-th row reading a source takes that source's k-th window (in epoch order).
        self.ordinal = np.empty(len(plan), dtype=np.int64)
        self.windows = {}
        self._orders = {}  # (source, epoch) -> window order; per stream, so it dies with the stream
        for source in set(setup.source_of_language):
            mask = source_of_row == source
            self.ordinal[mask] = np.arange(int(mask.sum()))
            self.windows[source] = num_windows(len(setup.tokens(source, "train")), seq_len)
            if self.windows[source] < 1:
                raise XlingError(f"training split of source {source} is shorter than one window of {seq_len} tokens")

    def _order(self, source: int, epoch: int) -> np.ndarray:
        if (source, epoch) not in self._orders:
            rng = np.random.default_rng([self.seed, DATA_ORDER_STREAM, source, epoch])
            self._orders[source, epoch] = rng.permutation(self.windows[source])
        return self._orders[source, epoch]

    def epochs(self, rows_done: int) -> dict[int, float]:
        """Passes over each source's training text after `rows_done` rows (> 1 means repeats)."""
        out = {}
        for source, n in self.windows.items():
            used = int((self.source_of_row[:rows_done] == source).sum())
            out[source] = used / n
        return out

    def windows_of(self, start: int, stop: int) -> np.ndarray:
        """Index of the window (within its source's training text) that each global row reads."""
        ordinal = self.ordinal[start:stop]
        sources = self.source_of_row[start:stop]
        window = np.empty(stop - start, dtype=np.int64)
        for source in np.unique(sources):
            n = self.windows[int(source)]
            for epoch in np.unique(ordinal[sources == source] // n):
                sel = (sources == source) & (ordinal // n == epoch)
                window[sel] = self._order(int(source), int(epoch))[ordinal[sel] % n]
        return window

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs [B, T], targets [B, T], languages [B]) of global rows start..stop-1, in model ids."""
        langs = self.plan[start:stop]
        positions = self.windows_of(start, stop)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        base = np.empty(positions.shape, dtype=np.int64)
        for lang in np.unique(langs):  # each row a window of its language's text, in that language's word order
            sel = langs == lang
            base[sel] = self.setup.ordered_tokens(int(lang), "train")[positions[sel]]
        ids = L.apply_languages(torch.from_numpy(base), torch.from_numpy(langs), self.setup.table)
        return ids[:, :-1].contiguous(), ids[:, 1:].contiguous(), torch.from_numpy(langs)


def encode_text(setup: LanguageSetup, lang: int, text: str) -> torch.Tensor:
    """Text -> model ids in one language (the language's tokenizer, then its id table row)."""
    return setup.to_model(lang, setup.tokenizer(lang).encode([text])[0])


def decode_ids(setup: LanguageSetup, lang: int, ids: torch.Tensor, mark: bool = False) -> str:
    """Model ids -> text in `lang`. An id of another language (a model may switch) is decoded with
    that language's tokenizer, shown as [NAME: text] with `mark`; an id no language uses is shown as U+FFFD."""
    inverse = L.inverse_table(setup.table, setup.model_vocab)
    order = [lang] + [other for other in range(setup.num_languages) if other != lang]

    def owner(model_id: int) -> int | None:
        return next((o for o in order if inverse[o, model_id] >= 0), None)

    parts = []
    for who, group in itertools.groupby(ids.tolist(), key=owner):
        if who is None:
            parts.append("\ufffd")
            continue
        text = setup.tokenizers[setup.source_of_language[who]].decode([int(inverse[who, i]) for i in group])
        parts.append(f"[{setup.names[who]}: {text}]" if mark and who != lang else text)
    return " ".join(parts)


def pad_batch(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with id 0 (xling's pad; any id would do): causal attention keeps the padding from
    touching real tokens."""
    lengths = torch.tensor([len(s) for s in seqs])
    batch = torch.full((len(seqs), int(lengths.max())), L.PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, :len(s)] = s
    return batch, lengths
