"""The alignment and transfer results of a study's runs, gathered per setting (seeds pooled).

Studies only train runs. `compute_missing` runs `xling align` (with the word2vec control for
clones) and `xling transfer` on every finished run that lacks them; `collect` then reads
RUN_DIR/alignment/alignment.json and RUN_DIR/transfer/<task>-<language>.json, so rerunning a
report costs nothing and a run directory stays the single source of truth.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..analysis.alignment import align_over_training, align_run, of_pair, well_formed
from ..analysis.transfer import transfer_run
from ..config import GRAD_SEQUENCES, PROBE_SEQUENCES
from ..errors import XlingError
from ..fsio import read_json
from ..study.launch import Launch, auto_workers, usable_cores
from ..study.spec import RunSpec, Study, runs_root
from ..study.state import is_complete
from ..train.rundir import RunDir
from .published import PAPER_GRAD_SEQUENCES
from .stats import Stat, t_stat
from .verdict import NOT_TESTED, Check, compare

DEFAULT_TASK = "bible-parts"


@dataclass
class Setting:
    """The runs of one setting (grid values without the seed) and their analysis results."""

    name: str
    kind: str  # clone | real
    vocab: str  # "clone" for clones, else disjoint | anchored | joint
    p: float  # the effective p (a schedule's mean); nan for many languages (shares, not p: never a 50/50 or 90/10)
    schedule: str
    pair: str = ""  # two languages of runs of more, with their shares ("EN1 60 % – EN3 20 %"); "" for runs of two
    rank: tuple[int, int] = (0, 1)  # the pair's languages, in the runs' order
    alignments: list[dict] = field(default_factory=list)
    transfers: list[dict] = field(default_factory=list)
    history: dict[int, list[dict]] = field(default_factory=dict)  # step -> the seeds' alignment at that checkpoint
    whole: str = ""  # runs of more than two languages: every language's share ("L1 10 % + 9 × 10 %"), for transfer

    @property
    def label(self) -> str:
        if math.isnan(self.p):  # many languages: the setting's name, and the pair aligned
            pair = "–".join(self.alignments[0]["languages"]) if self.alignments else ""
            return f"{self.vocab} {self.name}" + (f" ({pair})" if pair else "")
        if self.pair:  # (its shares say more than p: EN1 50 %, EN2 25 %, EN3 25 % is no 50/50)
            pair = f"schedule {self.schedule}: {self.pair}" if self.schedule else self.pair
            return pair if self.kind == "clone" else f"{self.vocab} {pair}"
        mix = f"schedule {self.schedule}" if self.schedule else f"{round(100 * (1 - self.p))}/{round(100 * self.p)}"
        return mix if self.kind == "clone" else f"{self.vocab} {mix}"


def check_pairs(pairs) -> None:
    if pairs not in ("first", "all"):
        raise XlingError(f"pairs is 'first' (each run's first two languages) or 'all' (every pair; --pairs), got "
                         f"{pairs!r}")


def aligned_pairs(spec: RunSpec, pairs: str) -> list[tuple[str, str] | None]:
    """The pairs of a run's languages to align: its first two (None) for `pairs` "first"; for "all", every pair
    of a run of more languages too (named as `RunDir.alignment_folder` names them)."""
    names = spec.mixture.names
    others = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names)) if (i, j) != (0, 1)]
    return [None] + (others if pairs == "all" else [])


def _hidden_wanted(done: dict, align_options: dict) -> bool:
    """Whether an alignment's hidden states are over fewer probes than asked, where its text has more (it was asked
    for fewer: `xling align --sequences`). An alignment from before 2026-11-29 does not say what it asked for: kept."""
    asked, hidden = align_options.get("sequences", PROBE_SEQUENCES), done.get("hidden") or {}
    taken = hidden.get("sequences", 0)
    return taken < asked and hidden.get("sequences_asked", math.inf) <= taken


def _gradients_wanted(done: dict, align_options: dict) -> bool:
    """Whether an alignment lacks the gradients asked for: none, over fewer probe sequences than asked (and than
    its probes), or, with a precision asked by name, in another precision."""
    asked = align_options.get("grad_sequences", GRAD_SEQUENCES)
    if not asked:
        return False
    taken, precision = done.get("gradient") or {}, align_options.get("grad_precision", "auto")
    return (taken.get("sequences", 0) < min(asked, get(done, "hidden", "sequences") or asked)
            or (precision != "auto" and taken.get("precision", "fp32") != precision))


def _missing(spec: RunSpec, root, task: str | None, word2vec: bool, align_options: dict,
             pairs: str = "first") -> tuple[dict, bool, bool]:
    """Which analyses a finished multilingual run lacks: ({pair: whether its word2vec control and its gradients are
    wanted} of the pairs whose alignment is missing, lacks the gradients asked for (`_gradients_wanted`), has hidden
    states over fewer probes than asked (`_hidden_wanted`) or, for the first two languages of a clone run with
    `word2vec`, lacks the word2vec control, e.g. after `xling demo`, which aligns without them; whether its alignment
    at some kept checkpoint is missing; whether its transfer on `task` is)."""
    run, names = RunDir(spec.run_dir(root)), list(spec.mixture.names)
    todo = {}
    for pair in aligned_pairs(spec, pairs):  # none yet, damaged, another pair's, of an earlier checkpoint: again
        done = of_pair(run.alignment_file(pair), list(pair or names[:2]), run)
        control = word2vec and pair is None and "word2vec" not in done  # (for clone pairs: frac_clone 0 has none)
        gradients = not done or _gradients_wanted(done, align_options)
        if gradients or (control and "embeddings" in done) or _hidden_wanted(done, align_options):
            todo[pair] = {"word2vec": control, "gradients": gradients}
    over_training = spec.run_config.train.keep_checkpoints != "last"
    return (todo, over_training and not all(of_pair(run.alignment_at(c), names[:2]) for c in run.checkpoint_dirs()),
            bool(task and not _transferred(run, task, names[0])))


def _transferred(run: RunDir, task: str, language: str) -> dict:
    """The run's transfer on `task` if it is of the checkpoint the run loads now (one of before 2026-11-29 does not
    say its step: kept), else {}."""
    done = read_json(run.transfer_path(task, language), {})
    shaped = isinstance(done.get("accuracy"), dict)  # (not a crafted file's shape)
    return done if shaped and ("step" not in done or run.is_current_step(done["step"])) else {}


def analyse_run(spec_json: dict, root: str, task: str | None, word2vec: bool, transfer_steps: int,
                align_options: dict, pairs: str = "first") -> tuple[dict, list[str]]:
    """The analyses one finished run lacks (`_missing`): its alignment (the word2vec control for
    clones; with `pairs` "all" every pair of its languages), its alignment at each kept checkpoint, its
    transfer. Returns counts and a line per analysis done. At module level, so that `compute_missing`'s
    worker processes can run it."""
    spec = RunSpec.from_json(spec_json)
    run_dir = spec.run_dir(root)
    alignments, over_training, transfer = _missing(spec, root, task, word2vec, align_options, pairs)
    counts, lines = {"aligned": int(bool(alignments)), "transferred": 0}, []  # (runs, not pairs)
    for pair, wanted in alignments.items():  # (what it has and is not computed again, `align_run` keeps)
        align_run(run_dir, pair=pair, word2vec={} if wanted["word2vec"] and spec.mixture.kind == "clone" else None,
                  **{**align_options, **({} if wanted["gradients"] else {"grad_sequences": 0})})
        lines.append(f"aligned {spec.id}" + (f" ({pair[0]}–{pair[1]})" if pair else ""))
    if over_training:
        align_over_training(run_dir, **{k: v for k, v in align_options.items() if k != "figures"})
        lines.append(f"aligned {spec.id} at {len(RunDir(run_dir).checkpoint_dirs())} checkpoints")
    if transfer:
        transfer_run(run_dir, task, steps=transfer_steps)
        counts["transferred"] += 1
        lines.append(f"transfer {spec.id}")
    return counts, lines


def analyse_trained_run(spec_json: dict, root: str, *args) -> list[str]:
    """`analyse_run`'s lines for a run the study runner has just trained, in the worker that trained it (`run_study`'s
    `then`); nothing for a run of one language (`compute_missing` skips those too)."""
    if not RunSpec.from_json(spec_json).mixture.multilingual:
        return []
    return analyse_run(spec_json, root, *args)[1]


def _own_real_text(cfg) -> bool:
    """Whether a run has a real language of your own text (the bible-parts task has no verses of it)."""
    lang = cfg.languages
    return lang.kind == "real" and (cfg.corpus.name != "bible" or (not lang.corpora and lang.second.name != "bible"))


def compute_missing(study: Study, root=None, task: str | None = DEFAULT_TASK, word2vec: bool = True,
                    transfer_steps: int = 300, log=None, workers: int | str = 1, pairs: str = "first",
                    **align_options) -> dict:
    """Run the alignment (and transfer) analyses on finished runs that lack them. Returns counts.
    `log(line)` is told of each analysis done (the CLI passes print). `workers` > 1: that many runs
    at a time in worker processes, the cores shared out among them (each run's analyses are
    independent and write only into its own directory); "auto": as many as `launch.auto_workers`
    gives the runs that need analyses. `pairs`: "first" aligns each run's first two languages, "all" every pair
    of a run of more languages too."""
    check_pairs(pairs)
    log = log or (lambda _: None)
    root = runs_root(root)
    # the authors took gradients over 500 probe sequences; CPU studies take GRAD_SEQUENCES (two backward passes each)
    align_options.setdefault("grad_sequences", PAPER_GRAD_SEQUENCES if study.scale == "paper" else GRAD_SEQUENCES)
    ready = [s for s in study.runs if s.mixture.multilingual and is_complete(s.run_dir(root))]
    counts = {"aligned": 0, "transferred": 0, "skipped": len(study.runs) - len(ready)}
    own = [s for s in ready if _own_real_text(s.run_config)]
    if task == DEFAULT_TASK and own:  # its verses exist in the Bibles' languages only (xling transfer would stop)
        log(f"transfer skipped: the {task} task has no text in {', '.join(own[0].mixture.names)} (real languages of "
            f"your own text; runs such as {own[0].id}): give --task FILE with a text_<LANG> column per language")
        task = None
    elif task == DEFAULT_TASK and any(s.run_config.corpus.name != "bible" for s in ready):
        log(f"transfer: the {task} task is the WEB Bible's English verses, not your text (the clones are compared "
            "on the same verses; give --task FILE for a task in your text)")
    todo = [s for s in ready if any(_missing(s, root, task, word2vec, align_options, pairs))]
    args = (str(root), task, word2vec, transfer_steps, align_options, pairs)
    workers = max(1, min(auto_workers(todo) if workers == "auto" else workers, len(todo)))
    if workers > 1:
        results = Launch("local", workers, max(1, usable_cores() // workers)).run_each(analyse_run, todo, *args)
    else:
        results = (analyse_run(spec.to_json(), *args) for spec in todo)
    with contextlib.closing(results):  # closed at once when stopped (launch.run_each says why)
        for done, lines in results:
            for key, n in done.items():
                counts[key] += n
            for line in lines:
                log(line)
    return counts


def collect(study: Study, root=None, task: str = DEFAULT_TASK) -> list[Setting]:
    """Per setting, the alignment and transfer results of its finished runs (seeds pooled); each further pair of a
    run's languages that was aligned (`--pairs all`) a setting of its own, labelled with the two languages' shares."""
    root = runs_root(root)
    settings: dict[tuple, Setting] = {}
    for spec in study.runs:
        mix = spec.mixture
        if not mix.multilingual:
            continue
        run, names = RunDir(spec.run_dir(root)), list(mix.names)
        p = math.nan if mix.many else mix.effective_p
        # a pair of more than two languages is labelled with their shares (two clones at p 0.5 are no 50/50 pair), and
        # is set beside the paper's pairs by nothing
        label = functools.partial(_pair_label, mix) if len(names) > 2 else (lambda i, j: "")
        setting = settings.setdefault((spec.setting, (0, 1)), Setting(spec.setting, mix.kind, mix.vocab, p,
                                                                      mix.schedule, label(0, 1),
                                                                      whole=_mix_label(mix, spec.setting)
                                                                      if len(names) > 2 else ""))
        by_pair = {}  # (i, j) -> result; a pair's own folder over an older alignment/ holding it (before 2026-11-29)
        for path in run.alignment_files():
            alignment = read_json(path, default={})
            langs = alignment.get("languages")
            if (alignment and well_formed(alignment) and isinstance(langs, list) and len(langs) == 2
                    and set(langs) <= set(names) and langs[0] != langs[1] and run.is_current_step(alignment["step"])):
                by_pair[tuple(sorted(names.index(n) for n in langs))] = alignment
        for (i, j), alignment in sorted(by_pair.items()):
            settings.setdefault((spec.setting, (i, j)), Setting(spec.setting, mix.kind, mix.vocab, p, mix.schedule,
                                                                label(i, j), rank=(i, j))).alignments.append(alignment)
        for ckpt in run.checkpoint_dirs():
            at = of_pair(run.alignment_at(ckpt), names[:2])
            if at:
                setting.history.setdefault(at["step"], []).append(at)
        transfer = _transferred(run, task, mix.names[0])
        if transfer:
            setting.transfers.append(transfer)
    first: dict[str, int] = {}  # a further pair right after its setting's first two
    for i, (name, _) in enumerate(settings):
        first.setdefault(name, i)
    return sorted((s for s in settings.values() if s.alignments or s.transfers),  # (many languages, p nan: last)
                  key=lambda s: (s.kind, s.vocab, s.schedule != "", math.inf if math.isnan(s.p) else -s.p,
                                 first[s.name], s.rank))


def _pair_label(mix, i: int, j: int) -> str:
    """Two languages of a run with their shares of its training data ("EN1 60 % – EN3 20 %"; many languages,
    labelled by their setting's name: the two names)."""
    if mix.many:
        return f"{mix.names[i]}–{mix.names[j]}"
    shares = mix.expected_shares()
    return f"{mix.names[i]} {100 * shares[i]:.0f} % – {mix.names[j]} {100 * shares[j]:.0f} %"


def _mix_label(mix, setting: str) -> str:
    """Every language of a run with its share ("EN1 10 % + 9 × 10 %"; many languages: the vocabulary and the
    setting's name, as their alignment rows have them)."""
    if mix.many:
        return f"{mix.vocab} {setting}"
    shares = mix.expected_shares()
    whole = f"{mix.names[0]} {100 * shares[0]:.0f} % + {len(shares) - 1} × {100 * shares[1]:.0f} %"
    return f"schedule {mix.schedule}: {whole}" if mix.schedule else whole


def coverage(study: Study, root=None, task: str = DEFAULT_TASK) -> dict:
    """What the report's analyses stand on, read as `collect` reads it: of the study's `finished` multilingual runs,
    how many have an alignment (`aligned`) and a transfer result on `task` (`transferred`); per setting whose seeds
    are not all aligned, (setting, seeds aligned, seeds finished) in `unaligned` (0 aligned: left out of every
    alignment table); the settings with a run lacking its transfer in `untransferred`. (A run reused from another
    study brings the analyses its twin had when it was copied.)"""
    root = runs_root(root)
    seeds: dict[str, list[int]] = {}  # setting -> [aligned, finished]
    untransferred, transferred = set(), 0
    for spec in study.runs:
        if not (spec.mixture.multilingual and is_complete(spec.run_dir(root))):
            continue
        run = RunDir(spec.run_dir(root))
        counts = seeds.setdefault(spec.setting, [0, 0])
        counts[0] += bool(of_pair(run.alignment_path, list(spec.mixture.names[:2]), run))  # (as `collect` reads it)
        counts[1] += 1
        if _transferred(run, task, spec.mixture.names[0]):
            transferred += 1
        else:
            untransferred.add(spec.setting)
    return {"finished": sum(n for _, n in seeds.values()), "aligned": sum(k for k, _ in seeds.values()),
            "transferred": transferred, "unaligned": [(name, k, n) for name, (k, n) in seeds.items() if k < n],
            "untransferred": sorted(untransferred)}


# --------------------------------------------------------------------------- reading the results


def stat(values) -> Stat:
    return t_stat([v for v in values if v is not None])


def get(result: dict, *path):
    """result[path[0]][path[1]]..., or None where any key is missing."""
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def layers(s: Setting) -> list[list[float]]:
    """Per layer, the hidden cosine of each seed."""
    per_seed = [a["hidden"]["layers"] for a in s.alignments]
    return [list(vals) for vals in zip(*per_seed)] if per_seed else []


def mean_hidden(s: Setting) -> list[float]:
    return [a["hidden"]["mean"] for a in s.alignments]


# The measures beyond the paper's raw cosine (analysis.representations), as alignment.json names them.
BEYOND = {"centred": "centred cosine", "cka": "linear CKA", "retrieval": "translation retrieval"}


def measure_layers(s: Setting, name: str) -> list[list[float]]:
    """Per layer, the seeds' values of one of the BEYOND measures (seeds aligned before it existed skip)."""
    per_seed = [a["hidden"][name]["layers"] for a in s.alignments if name in a["hidden"]]
    return [list(vals) for vals in zip(*per_seed)] if per_seed else []


def measure_mean(s: Setting, name: str) -> list[float]:
    return [a["hidden"][name]["mean"] for a in s.alignments if name in a["hidden"]]


def centred_baseline(s: Setting) -> list[float]:
    """Per seed (aligned since it existed), the centred cosine of shuffled pairs: sequences that are not
    translations, aligned as the real ones are (for a real pair, what the token matching alone finds)."""
    return [a["hidden"]["centred"]["shuffled_baseline"]["mean"] for a in s.alignments
            if "shuffled_baseline" in a["hidden"].get("centred", {})]


def centred_excess(s: Setting) -> list[float]:
    """Per seed, the centred cosine of translations minus that of shuffled pairs."""
    return [a["hidden"]["centred"]["mean"] - a["hidden"]["centred"]["shuffled_baseline"]["mean"]
            for a in s.alignments if "shuffled_baseline" in a["hidden"].get("centred", {})]


def hidden_excess(s: Setting) -> list[float]:
    """Mean hidden cosine minus the shuffled baseline, per seed: alignment beyond anisotropy."""
    return [a["hidden"]["mean"] - float(np.nanmean(a["hidden"]["shuffled_baseline"])) for a in s.alignments]


def pair_cosines(s: Setting, group: str, kind: str, pairs: str = "clone_pairs") -> list[float]:
    """The mean cosine of a matrix's clone pairs (or, `pairs` "all_pairs", of all its pairs), per seed: the clone
    pairs' is the paper's quantity (its Figure 7 plots it against p, with the all-pairs baseline as a reference)."""
    return [v for v in (get(a, group, kind, pairs) for a in s.alignments) if v is not None]


def embedding_excess(s: Setting, group: str, kind: str, *seen: str) -> list[float]:
    """Clone-pair cosine minus the all-pairs baseline, per seed: the alignment above what any two rows share, which
    moves with p too (beyond the paper, which reports one baseline value per matrix)."""
    return [get(a, group, kind, *seen, "clone_pairs") - get(a, group, kind, *seen, "all_pairs") for a in s.alignments
            if get(a, group, kind, *seen, "clone_pairs") is not None]


def higher(more: Setting | None, less: Setting | None, values) -> Check:
    """Does `more` have a higher value (values(setting) -> one per seed) than `less`?"""
    if not more or not less:
        return NOT_TESTED
    return compare(stat(values(more)), stat(values(less)), smaller=False)


def find(settings: list[Setting], kind: str, p: float, vocab: str | None = None) -> Setting | None:
    return next((s for s in settings if s.kind == kind and not s.schedule and not s.pair and abs(s.p - p) < 1e-9
                 and (vocab is None or s.vocab == vocab)), None)
