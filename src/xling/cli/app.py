"""`xling <command>`: parse, validate, call the library, print. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import re
import signal
import sqlite3
import sys
import threading
from pathlib import Path

from .. import __version__, yamlio
from ..config import RunConfig, flatten, load_config, to_dict
from ..errors import XlingError, for_terminal, is_closed, warnings_to_stderr
from ..fsio import cache_hint
from ..train.rundir import RunDir
from ..train.threads import openmp_wait_setup
from . import analysis_commands as analysis
from . import data_commands as data
from . import run_commands as run
from . import study_commands as study
from .command import Command, always

COMMANDS: tuple[Command, ...] = (
    Command("config", "print the resolved config (defaults + file + overrides)", run.config_arguments, run.config,
            overrides=True, epilog=run.config_sections),
    Command("prepare", "train the tokenizers and encode the token arrays of a config's corpora (cached)",
            data.prepare_arguments, data.prepare,
            "Read the corpora as a stream in parallel worker processes: tokenizers on a bounded sample of the train "
            "split, then every split's token arrays. Training does this by itself when needed.", overrides=True,
            epilog=run.config_sections, continues=always),
    Command("train", "train a model; --section.key VALUE overrides the config", run.train_arguments, run.train,
            "Train a run. Any config key can be overridden: --train.steps 200 --languages.p 0.5",
            overrides=True, epilog=run.config_sections),
    Command("status", "whether runs are pending, running, interrupted, failed or completed, and their step",
            run.status_arguments, run.status,
            "One line per run directory, read from its files and lock (a run killed with kill -9 is interrupted, not "
            "running); a directory of runs lists each. A study's runs: `xling study status NAME`."),
    Command("eval", "per-language test perplexity of a run (writes eval.json)", run.eval_arguments, run.evaluate),
    Command("sample", "generate text in one language of a run", run.sample_arguments, run.sample,
            "Print the prompt and what the model writes after it, on one line that starts with the language's name "
            "in brackets ([EN2] In the beginning ...); from Python, Run.sample returns the text alone."),
    Command("export", "a run as a Hugging Face GPT2LMHeadModel checkpoint plus one language's tokenizer",
            run.export_arguments, run.export,
            "Write the run's latest checkpoint as a transformers GPT2LMHeadModel and a tokenizer that "
            "AutoTokenizer.from_pretrained(OUT) loads, giving the ids of one language (--language). "
            "E.g. then: lm_eval --model hf --model_args pretrained=OUT"),
    Command("teff", "MLPE, MLTE and token efficiency from monolingual and run perplexities (CSV)",
            analysis.teff_arguments, analysis.teff),
    Command("align", "hidden-state, gradient and embedding alignment of two languages (writes RUN_DIR/alignment/)",
            analysis.align_arguments, analysis.align,
            "Alignment metrics of each run on held-out parallel probes; several runs are printed side by side."),
    Command("transfer", "fine-tune a classifier in one language, test zero-shot in every language",
            analysis.transfer_arguments, analysis.transfer,
            "Fine-tune a run on a classification task in one language and evaluate it in all languages "
            "(writes RUN_DIR/transfer/<task>-<language>.json)."),
    Command("study", "run a paper experiment (a grid of runs) or show its progress", study.study_arguments, study.study,
            "Studies are YAML files (`xling study list` shows them). `run` does only what is missing and can be "
            "interrupted at any point; running it again continues.", continues=lambda args: args.action == "run"),
    Command("report", "Markdown + HTML report of a study: tables, figures, verdict (reports/NAME/)",
            study.report_arguments, study.report),
    Command("demo", "the headline experiment on the built-in corpus, then its report (minutes on a CPU)",
            study.demo_arguments, study.demo, continues=always),
    Command("store", "maintain the SQLite results store", study.store_arguments, study.store),
    Command("export-logs", "TensorBoard / W&B / CSV logs of runs that trained without --log",
            study.export_logs_arguments, study.export_logs),
    Command("align-report", "alignment and transfer report of a study (runs `align` and `transfer` where missing)",
            study.align_report_arguments, study.align_report,
            "For every finished multilingual run of a study: `xling align` (+ word2vec for clones) and `xling "
            "transfer` unless already done, then reports/NAME/alignment.md and .html.", continues=always),
    Command("bench", "training-step tokens/s, MFU and the ratio to Hugging Face GPT-2 (--section.key VALUE overrides)",
            run.bench_arguments, run.bench,
            "Time xling's training step on a config's shapes (default: the config clone-90-10), the data path, a GEMM peak, "
            "and transformers' GPT2LMHeadModel on identical shapes. "
            "E.g. xling bench --model.preset cpu-m --train.batch_size 32 --out bench.json", overrides=True),
)


class _Store(argparse._StoreAction):
    """An argument's value, refused where it is a mistake argparse would take without a word: an option given twice
    (it would take the last), or an empty value (`xling train ""` would train the defaults into runs/ itself)."""

    MAY_BE_EMPTY = frozenset({"prompt"})  # (xling sample --prompt "": from the start of a document)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.given_in is namespace and self.option_strings:  # (argparse may fill a positional in two passes)
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)} and {values}): give it once")
        self.given_in = namespace
        given = values if isinstance(values, list) else [values]
        if self.dest not in self.MAY_BE_EMPTY and any(isinstance(v, str) and not v.strip() for v in given):
            parser.error(f"{option_string or self.metavar or self.dest.upper()} is empty: give a value")
        super().__call__(parser, namespace, values, option_string)

    given_in = None  # the namespace of the parse that gave it


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a usage mistake is an XlingError like any other bad input (`_Store`'s too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _Store)
        self.register("action", "store", _Store)

    def error(self, message: str):
        wrong = re.search(r"invalid choice: '?(.*?)'? \(choose from (.*)\)$", message)  # (quoted before 3.12.8)
        close = wrong and difflib.get_close_matches(wrong[1], [c.strip(" '") for c in wrong[2].split(",")], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise XlingError(f"{message}{hint} (see {self.prog} --help)")


def _close_option(given: str, options: list[str], overrides: bool) -> list[str]:
    """The option or config key (--section.key) that a mistyped option probably meant."""
    if not given.startswith("--"):
        return []
    key = given[2:].partition("=")[0].replace("-", "_")  # --seq-len(=64) for model.seq_len
    keys = [f"--{k}" for k in flatten(to_dict(RunConfig())) if k.endswith(f".{key}")] if overrides else []
    return keys or difflib.get_close_matches(given, options, n=1, cutoff=0.75)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="xling", description="Controlled experiments on cross-lingual "
                                     "generalisation in language models.")
    parser.add_argument("--version", action="version", version=f"xling {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.description or command.help,
                           epilog=command.epilog() if command.epilog else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        command.arguments(p)
        p.set_defaults(command_spec=command, option_strings=[o for action in p._actions for o in action.option_strings])
    return parser


def split_overrides(argv: list[str]) -> tuple[list[str], dict]:
    """Take `--section.key VALUE` / `--section.key=VALUE` pairs (and `--name VALUE`, the run's name, the one
    top-level key) out of argv before argparse sees them."""
    rest, overrides, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:].partition("=")[0]
        if not (arg.startswith("--") and (("." in key and not key.startswith(".")) or key == "name")):
            rest.append(arg)
            i += 1
            continue
        if "=" in arg:
            value = arg.partition("=")[2]
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):  # (a value that does: --key=VALUE)
            value, i = argv[i + 1], i + 1
        else:
            raise XlingError(f"override --{key} needs a value, e.g. --{key} VALUE"
                             + (f" (the option {argv[i + 1]} came next; a value that starts with '--': --{key}=VALUE)"
                                if i + 1 < len(argv) else ""))
        value = value if key == "name" else yamlio.parse_value(value)  # a name is text as typed
        if key in overrides and overrides[key] != value:  # argparse would take the last; say which was meant
            raise XlingError(f"--{key} given twice ({overrides[key]!r} and {value!r}): give it once")
        overrides[key] = value
        i += 1
    return rest, overrides


def config_and_options(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, RunConfig]:
    """`parser`'s options and the run config argv names as `xling train` takes it (CONFIG, default clone-90-10, and
    `--section.key VALUE` overrides on top): for scripts that time a run's step (benchmarks/). A bad config or
    override is argparse's usage line and one line of what to fix, exit status 2."""
    parser.add_argument("config", nargs="?", help="YAML config or packaged config name (default: clone-90-10); "
                        "--section.key VALUE overrides apply on top, as for `xling train`")
    try:
        rest, overrides = split_overrides(argv)
        args = parser.parse_args(rest)
        return args, load_config(args.config, overrides)
    except XlingError as e:
        parser.error(str(e))


# Problems with the paths and disks the user chose, which they fix: one line, exit 2.
_STORAGE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
_PATH_ERRORS = {errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP}


def _what_next(args) -> str:
    """What a stopped command's user does next: the resume command of a run that started, or whether running the same
    command again goes on where it stopped."""
    run_dir, command = getattr(args, "resume_hint", (None, ""))  # `xling train` sets it once it knows the run
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        finished = _run_completed(args) and (args.no_eval or RunDir(run_dir).eval_path().is_file())
        return "" if finished else f"; continue with: {command}"  # (stopped while printing its tables)
    if getattr(args, "command_spec", None) is None:
        return ""
    if _goes_on(args):
        return "; it goes on from where it stopped when you run the same command again"
    return "; run the same command again (it starts afresh)"


def _goes_on(args) -> bool:
    """Whether running the command again goes on from where it stopped (a run, a study, a report's analyses)."""
    spec = getattr(args, "command_spec", None)
    return spec is not None and (spec.continues(args) or spec.name == "train")


def _run_completed(args) -> bool:
    """Whether `xling train`'s run has completed (its tables met the closed pipe: nothing to go on with)."""
    run_dir = getattr(args, "resume_hint", (None,))[0]
    return run_dir is not None and RunDir(run_dir).read_info(tolerant=True).get("status") == "completed"


class Terminated(KeyboardInterrupt):
    """SIGTERM, stopping a command as Ctrl-C does; its exit status is a SIGTERM's (143), so a scheduler tells them
    apart."""


_TERMINATED: list[bool] = []  # a SIGTERM came in this command (Ray's wait raises its own Ctrl-C in place of ours)


def _interrupt(signum, frame):
    _TERMINATED.append(True)
    raise Terminated


def _stop_on_sigterm():
    """Let SIGTERM (kill, timeout, a SLURM time limit) stop a command as Ctrl-C does: a run is checkpointed and
    marked interrupted, not left 'running' (under torchrun, whose agent passes a SIGTERM on to every process and
    kills them 30 s later, all of them after the same step). Returns the handler to restore (None: left as it was:
    outside the main thread, or where the caller set a handler of its own)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def main(argv: list[str] | None = None) -> int:
    warnings_to_stderr()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = None
    finished = False  # the command's work is done (a pipe met afterwards cut only its output short)
    previous_sigterm = _stop_on_sigterm()
    _TERMINATED.clear()
    if hasattr(sys.stdout, "reconfigure"):  # each line out at once: a reader gone (`| head`) is met at the next line
        sys.stdout.reconfigure(line_buffering=True)
    try:
        argv, overrides = split_overrides(argv)
        args, extra = parser.parse_known_args(argv)
        command: Command = args.command_spec
        if extra:
            close = _close_option(extra[0], args.option_strings, command.overrides)
            raise XlingError(f"unexpected argument '{extra[0]}'" + (f" (did you mean {close[0]}?)" if close else "")
                             + f": see xling {command.name} --help"
                             + ("; config overrides look like --section.key VALUE" if command.overrides else ""))
        if overrides and not command.overrides:
            raise XlingError(f"xling {command.name} takes no config overrides (got --{next(iter(overrides))})")
        openmp_wait_setup()  # after parsing (--help and mistakes answer at once), before any command imports torch
        code = command.run(args, overrides)
        finished = True
        sys.stdout.flush()  # a closed pipe is met here, not at interpreter exit
        return code
    except XlingError as exc:
        print(f"xling: error: {for_terminal(str(exc))}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as exc:  # the results store's disk is full or read-only
        if not any(s in str(exc) for s in ("disk is full", "readonly", "unable to open")):
            raise
        print(f"xling: error: results store: {exc}: use --db on a writable disk with free space", file=sys.stderr)
        return 2
    except BrokenPipeError:  # whoever read the output stopped (`xling ... | head`), or another pipe broke
        closed = [stream for stream in (sys.stdout, sys.stderr) if is_closed(stream)]
        if not closed:
            raise
        for stream in closed:  # Python's flush at exit must not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        if sys.stderr not in closed and not finished and _goes_on(args) and not _run_completed(args):  # work cut short
            print(f"\nxling: stopped: the output's reader has gone{_what_next(args)}", file=sys.stderr)
        return 141  # as a shell reports a command stopped by SIGPIPE: its output was cut short
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        in_cache = cache_hint(exc.filename)
        if exc.errno in _STORAGE_ERRORS and in_cache:
            print(f"xling: error: cannot write{where} ({exc.strerror}): {in_cache} with free space", file=sys.stderr)
        elif exc.errno in _STORAGE_ERRORS:
            print(f"xling: error: cannot write{where} ({exc.strerror}): use a writable output directory with free "
                  "space" + ("; an interrupted run continues with --resume" if getattr(args, "resume_hint", None)
                             else ""), file=sys.stderr)
        elif exc.errno in _PATH_ERRORS and exc.filename:
            print(f"xling: error: cannot use{where} ({exc.strerror}): an output path must be a directory, or not "
                  "exist yet", file=sys.stderr)
        else:
            raise
        return 2
    except KeyboardInterrupt as exc:
        if os.environ.get("RANK", "0") == "0":  # (under torchrun, one line for all its processes)
            print(f"\nxling: interrupted{_what_next(args)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) or _TERMINATED else 130
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
