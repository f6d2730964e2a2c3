"""`xling.train` and `xling.Run`: train a run, then read, evaluate, sample, align and fine-tune it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import GRAD_SEQUENCES, PROBE_SEQUENCES
from ..errors import XlingError, a_kind
from ..fsio import read_json
from .checks import check_arguments
from .configs import Config, ConfigSource, unwrap
from .scores import rows_or_frame

_SPLITS = ("train", "valid")


class Run:
    """A run directory, as `train` (or `xling train`, or a study) writes it.

    `Run(path)` reads nothing until asked. Its config, status and metrics are read from the files;
    `evaluate`, `sample`, `align` and `transfer` load the latest good checkpoint (on a GPU where there
    is one, unless a ``device`` is given) and write their results into the directory, as the commands
    of the same names do. `model` gives the trained network as a torch module, `export_hf` writes it
    as a Hugging Face model.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise XlingError(f"a run is a directory's path (str or Path), not {a_kind(path)}")
        self.path = Path(path)
        self._planned = False  # a study's run: pending until its directory is made

    @classmethod
    def _of_study(cls, path: str | os.PathLike) -> Run:
        run = cls(path)
        run._planned = True
        return run

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    def _dir(self):
        from ..train.rundir import RunDir

        return RunDir(self.path)

    def _require_unless_planned(self) -> None:
        """One XlingError for a path where nothing is (a typo), or a file; a study's run not started yet is pending."""
        if not self._planned and not self.path.is_dir():
            self._dir().require()

    # ------------------------------------------------------------------ what the files say
    @property
    def exists(self) -> bool:
        """Whether the directory holds a run (its config.yaml)."""
        return (self.path / "config.yaml").is_file()

    @property
    def config(self) -> Config:
        """The run's config (config.yaml), checked like any config; relative paths that are not found from here are
        read from where the run trained (run.json's workdir), as evaluation reads them."""
        return Config(self._dir().config_from_here(tolerant=True))

    @property
    def info(self) -> dict:
        """run.json: status, steps, token budget, tokens per language, data epochs, validation perplexity ({} before
        training starts; for a path where nothing is, an XlingError, as `status` says)."""
        self._require_unless_planned()
        return self._dir().read_info()

    @property
    def status(self) -> str:
        """running, interrupted, failed or completed (run.json's word); pending before training starts (a directory
        that holds no run yet, or a run of `Study.runs` not started). A run.json that still says running while no
        process holds the run's lock was killed (kill -9, a lost machine): interrupted. A study's run is read as
        `xling study status` reads it (trained: no test evaluation yet). As `xling status RUN_DIR`; where that says
        damaged (an unreadable run.json or config.yaml, an evaluation no model gives), and for a path where nothing
        is (a typo; `exists` asks without one), an XlingError says why."""
        from ..study.state import any_run_state, check_run_files

        self._require_unless_planned()
        check_run_files(self.path)
        return any_run_state(self.path)

    @property
    def languages(self) -> list[str]:
        """The run's language names, e.g. ["EN1", "EN2"]."""
        from ..data.corpora import language_names

        return list(self.info.get("languages") or language_names(self.config._cfg))

    def metrics(self, split: str = "train", frame: bool = False) -> Any:
        """The logged metrics as rows (dicts), one per record of metrics.jsonl, or a DataFrame with `frame`.

        ``"train"``: step, loss, lr, tokens_per_s and ``tokens/LANG`` (tokens each language has had) per
        logged step; ``"valid"``: step and ``ppl/LANG`` per validation. Test perplexities: `evaluation`.
        """
        check_arguments(frame=(frame, bool))
        if split not in _SPLITS:
            raise XlingError(f"metrics split must be {' or '.join(_SPLITS)}, got {split!r} (test: Run.evaluation())")
        rows = []
        for record in self._dir().require().read_metrics():
            if (split == "train") != ("loss" in record) or (split == "valid" and record.get("split") != "valid"):
                continue
            row = {k: v for k, v in record.items() if k not in ("losses", "tokens", "split")}
            row.update({f"tokens/{lang}": n for lang, n in (record.get("tokens") or {}).items()})
            rows.append(row)
        return rows_or_frame(rows, frame)

    def eval_path(self, split: str = "test", *, window: int | None = None, last_n: int | None = None,
                  max_tokens: int | None = None) -> Path:
        """Where `evaluate` writes a split's perplexities: eval.json (test) or eval_SPLIT.json under the run's
        own protocol; eval_SPLIT_PROTOCOL.json under another `window`, `last_n` or `max_tokens`."""
        from ..data.corpora import check_split_name
        from ..train.evaluate import evaluation_path, protocol

        check_split_name(split)
        run = self._dir()
        if window is None and last_n is None and max_tokens is None:
            return run.eval_path(split)
        own = run.require().own_protocol()
        seq_len = run.read_config().model.seq_len  # (window 0: the model's length)
        return evaluation_path(run, own, split, protocol(own, window, last_n, max_tokens, seq_len))

    def evaluation(self, split: str = "test") -> dict[str, dict]:
        """The stored evaluation: {language: {loss, ppl, tokens_scored}} (`evaluate` computes it)."""
        from ..data.corpora import check_split_name

        check_split_name(split)
        path = self._dir().require().eval_path(split)
        if not path.is_file():
            others = sorted(p.name for p in path.parent.glob(f"{path.stem}_*.json"))
            raise XlingError(f"{self.path} has no {split} evaluation yet: call Run.evaluate(split={split!r}) "
                             f"(or xling eval {self.path}{'' if split == 'test' else f' --split {split}'})"
                             + (f"; {', '.join(others)} scored it under another protocol (max_tokens, window or "
                                "last_n other than the run's), which this does not read" if others else "")
                             + ("; the validation during training is in Run.info['valid'] and Run.metrics('valid')"
                                if split == "valid" else ""))
        return dict(self._dir().read_evaluation(path, tolerant=False).get("languages") or {})

    # ------------------------------------------------------------------ what loads the model
    def evaluate(self, split: str = "test", max_tokens: int | None = None, device: str = "auto",
                 window: int | None = None, last_n: int | None = None, progress: bool = False) -> dict[str, dict]:
        """Per-language perplexity of the latest checkpoint with the paper's protocol (the run's ``eval``
        section); writes `eval_path` and returns {language: {loss, ppl, tokens_scored}}. `max_tokens`:
        score only a prefix of each language's stream (None: the run's eval.max_tokens, 0: all). Another
        `max_tokens`, `window` (0: the model's length; `last_n` then defaults to a quarter of it) or `last_n` (0: a
        quarter of the window) than
        the run's is written to a file of its own (eval_<split>_<protocol>.json), which `evaluation` and studies do
        not read. A study's run scores the languages it trained on, as the study did (a monolingual run of a pair
        is not scored in the other). `progress`: a bar over the windows scored, on a terminal."""
        from ..train.evaluate import evaluate_run

        whole = (int, type(None))  # (their ranges: evaluate_run, which knows the window)
        check_arguments(split=(split, str), max_tokens=(max_tokens, whole), window=(window, whole),
                        last_n=(last_n, whole), progress=(progress, bool))
        report, _ = evaluate_run(self.path, split, max_tokens, device, window=window, last_n=last_n,
                                 trained_only=(self.path / "study.json").is_file(), progress=progress)
        return dict(report["languages"])

    def sample(self, language: str, prompt: str = "", tokens: int = 60, temperature: float = 0.8, top_k: int = 40,
               seed: int = 0, device: str = "auto", any_language: bool = False) -> str:
        """Text generated in one language: `prompt` and its continuation of at most `tokens` tokens, ending where
        the model ends the document (as Hugging Face's generate stops at the exported model's end of text; without
        a prompt, a new document), choosing among that language's ids only (with a joint vocabulary: all of
        them). `temperature` 0 is greedy; `top_k`
        0 keeps every token. `any_language`: every id of the model may follow, so the text may switch language;
        pieces of another language are shown as [NAME: text]."""
        import torch

        from ..data.stream import decode_ids, encode_text
        from ..model.gpt import generate
        from ..train.session import load_session

        prompt = "" if prompt is None else prompt
        check_arguments(language=(language, str), prompt=(prompt, str), tokens=(tokens, int, 1, 100_000),
               temperature=(temperature, float, 0, 100), top_k=(top_k, int, 0, 10**7), seed=(seed, int, 0, 2**32 - 1),
               any_language=(any_language, bool))
        session = load_session(self.path, device=device)
        lang = session.setup.index(language)
        if prompt:
            ids = encode_text(session.setup, lang, prompt)
        else:  # start a new document: the language's end-of-document id
            ids = torch.tensor([session.setup.eod(lang)])
        gen = torch.Generator().manual_seed(seed)
        allowed = None
        if not any_language:
            allowed = session.setup.text_ids(lang).to(session.device)
        with session.autocast():
            out = generate(session.model, ids.to(session.device), tokens, temperature, top_k, gen, allowed,
                           stop={session.setup.eod(other) for other in range(session.setup.num_languages)})
        # decoded with the prompt: a continuation's first piece may start a new word ("▁has")
        return decode_ids(session.setup, lang, torch.cat([ids.cpu(), out.cpu()]), mark=any_language)

    def model(self, device: str = "cpu") -> Any:
        """The trained GPT (a torch.nn.Module, in eval mode) with the latest good checkpoint's weights.
        ``model(ids)`` gives logits over the model vocabulary; ``model.loss(x, y)`` the training loss."""
        from ..train.session import load_session

        return load_session(self.path, device=device).model

    def align(self, pair: Sequence[str] | None = None, sequences: int = PROBE_SEQUENCES,
              grad_sequences: int = GRAD_SEQUENCES, batch_size: int = 16, word2vec: bool | dict = False,
              figures: bool = True, reuse: bool = False, device: str = "auto", grad_precision: str = "auto") -> dict:
        """How aligned two languages are inside the model (hidden states per layer, gradients, embeddings),
        on held-out parallel probes; writes alignment/alignment.json (and figures) and returns its content.

        `pair`: the two languages (default: the first two; another pair of a run of more languages goes to
        alignment/pairs/A+B/, so each pair keeps its own; either order is the same pair). `word2vec`: also the word2vec control of
        cloned languages (True, or a dict of vector_size, window, epochs). `reuse`: read an existing
        alignment.json of the same pair instead of computing it again. A recomputation without the word2vec
        control or gradients keeps those of an earlier alignment.json of the same pair (gradients only from
        the same checkpoint; their names in the result's "kept"). `grad_precision`: "auto" (the authors':
        fp16 autocast on a GPU, fp32 on a CPU), "fp32" or "fp16". See `xling align --help` for the measures.
        """
        from ..analysis.alignment import align_run, checked_pair, stored_pair

        _check_alignment(sequences, grad_sequences, batch_size, grad_precision, figures=(figures, bool),
                         reuse=(reuse, bool), word2vec=(word2vec, (bool, Mapping)))
        pair = checked_pair(pair)
        if reuse and (stored := stored_pair(self._dir().path, pair)[1]):
            return stored
        w2v = None if word2vec is False else ({} if word2vec is True else dict(word2vec))
        return align_run(self.path, pair=pair, sequences=sequences,
                         grad_sequences=grad_sequences, batch_size=batch_size, word2vec=w2v, device=device,
                         figures=figures, grad_precision=grad_precision)

    def align_over_training(self, pair: Sequence[str] | None = None, sequences: int = PROBE_SEQUENCES,
                            grad_sequences: int = GRAD_SEQUENCES, batch_size: int = 16, reuse: bool = True,
                            device: str = "auto", grad_precision: str = "auto") -> list[dict]:
        """`align`'s measures at every checkpoint the run kept (``train.keep_checkpoints: log`` or ``all``),
        in training order; each is computed once (alignment/checkpoints/) unless `reuse` is False."""
        from ..analysis.alignment import align_over_training, checked_pair

        _check_alignment(sequences, grad_sequences, batch_size, grad_precision, reuse=(reuse, bool))
        return align_over_training(self.path, reuse=reuse, pair=checked_pair(pair), sequences=sequences,
                                   grad_sequences=grad_sequences, batch_size=batch_size, device=device,
                                   grad_precision=grad_precision)

    def transfer(self, task: str = "bible-parts", language: str | None = None, steps: int = 300,
                 batch_size: int = 32, lr: float = 3e-4, seed: int = 0, device: str = "auto") -> dict:
        """Fine-tune a linear head and the model on a classification task in one `language` (default: the
        first), then measure accuracy zero-shot in every language; writes transfer/TASK-LANGUAGE.json and
        returns it. `task`: ``"bible-parts"`` (built in) or a CSV / JSONL file with text and label columns."""
        from ..analysis.transfer import transfer_run

        check_arguments(task=(task, (str, os.PathLike)), language=(language, (str, type(None))), steps=(steps, int, 1, 10**9),
               batch_size=(batch_size, int, 1, 2**16), lr=(lr, float, 1e-12, 10), seed=(seed, int, 0, 2**32 - 1))
        return transfer_run(self.path, task, language, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                            device=device)

    def export_hf(self, out: str | os.PathLike, language: str | None = None) -> dict:
        """Write the latest checkpoint as a Hugging Face ``GPT2LMHeadModel`` with the tokenizer of one `language`
        (default: the first) into the new directory `out`, which ``transformers.AutoModelForCausalLM`` and
        ``AutoTokenizer`` then load (``from_pretrained(out)``); returns what was written (out, language,
        vocab_size, eod, files) and the checkpoint's step of the run's steps. As ``xling export RUN_DIR OUT --format
        hf``."""
        from ..train.hf_export import export_hf

        check_arguments(out=(out, (str, os.PathLike)), language=(language, (str, type(None))))
        return export_hf(self.path, out, language)


def _check_alignment(sequences, grad_sequences, batch_size, grad_precision, **more) -> None:
    check_arguments(sequences=(sequences, int, 1, 10**7), grad_sequences=(grad_sequences, int, 0, 10**7),
                    batch_size=(batch_size, int, 1, 2**16), grad_precision=(grad_precision, str), **more)


def default_run_dir(config: Any, cfg) -> Path:
    """Where a run of `config` goes when no directory is given: the runs root ($XLING_RUNS or ./runs) / its name."""
    from ..study.spec import runs_root

    name = cfg.name or (Path(config).stem if isinstance(config, (str, os.PathLike)) else "")
    if not name:
        raise XlingError("give the run directory (out=...) or a config with a name")
    return runs_root() / name


def train(config: Config | ConfigSource, out: str | os.PathLike | None = None, *, resume: bool = False,
          evaluate: bool = True, progress: bool = True, loggers: Sequence[str] = ()) -> Run:
    """Train a run into the directory `out` and return it (see `Run`), as `xling train` does.

    `config`: a `Config`, or anything `Config` takes (a recipe name, a YAML file, a mapping). `out`:
    the run directory (default $XLING_RUNS/NAME, or runs/NAME). A directory that holds a run is refused unless `resume`:
    then training continues from its last good checkpoint, exactly as if never interrupted (a
    finished run only has its config checked, and is evaluated again). With `evaluate`, the test
    split is scored at the end (eval.json; `Run.evaluation` reads it). `progress`: a progress bar on
    stderr. `loggers`: live logs, any of ``"tensorboard"``, ``"wandb"``, ``"csv"`` (a missing package
    is one note on stderr).
    """
    from ..data.parallel import check_not_importing_the_script
    from ..train.live_log import LiveLog, logger_names
    from ..train.lock import training_lock
    from ..train.rundir import RunDir
    from ..train.stopping import is_stop
    from ..train.trainer import Trainer

    check_not_importing_the_script()  # (data preparation may start worker processes, which import the script)
    check_arguments(resume=(resume, bool), evaluate=(evaluate, bool), progress=(progress, bool))
    cfg = unwrap(config)
    run = Run(out if out is not None else default_run_dir(config, cfg))
    with LiveLog(run.path, logger_names(loggers)) as live:
        for note in live.notes:
            print(f"note: {note}", file=sys.stderr)
        info = Trainer(cfg, run.path, live=live, tested=evaluate).fit(resume=resume, progress=progress)
        if info["status"] == "completed" and not info.get("rank") and evaluate:
            with training_lock(run.path):  # taken again at once: the run is still at work (xling status: running)
                try:
                    run.evaluate(progress=progress)
                except BaseException as exc:
                    if is_stop(exc):  # (not "completed": `xling status` then says a resume finishes it)
                        with contextlib.suppress(OSError, XlingError):  # (the stop goes on, whatever the disk says)
                            RunDir(run.path).update_info(status="interrupted")
                    raise
            live.log_evaluation(read_json(run.eval_path()))
    return run
