"""Bad input, command by command and config section by section: one line on stderr, exit 2, nothing written.

Each case is a command line (placeholders are filled in per test) and a fragment of the message
it must print. Every case runs in an empty working directory; afterwards that directory, the
output path and the trained run it may have read must be exactly as before.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3

import pytest
import sentencepiece as spm
import yaml

from conftest import tiny_config_dict
from test_study import tiny_study_dict
from xling.cli import main

T = "train {config} --out {out} --quiet"  # a valid tiny config, then the override under test
# many languages ({many} in a case); languages.p back to its default (it mixes a pair or clones only)
MANY_BUT_CORPORA = "--corpus.name bible --corpus.paths [] --languages.kind real --languages.p 0.1"
MANY = f"{MANY_BUT_CORPORA} --languages.corpora [web,lsg]"
PAIR = "--languages.kind real --languages.second.translation fr"  # the tiny text beside the French Bible ({pair})
OWN = "--tokenizer.vocab_size 4096"  # back to the default: a brought tokenizer has its own vocabulary

CASES = [
    # --- config sections, through `xling train` (every section, and the run's name)
    ("corpus name", f"{T} --corpus.name csv", "corpus.name must be bible, text, jsonl, parquet or hf"),
    ("a study file as a config", "prepare {study}", "is a study file (base, grid, groups), not a run config"),
    ("a study's name as a config", "config headline-cpu", "headline-cpu is a study, not a run config"),
    ("a config's name as a study", "study run clone-90-10 --root {out}", "clone-90-10 is a run config, not a study"),
    ("corpus books", f"{T} --corpus.books some", "corpus.books must be all, odd or even"),
    ("corpus paths", f"{T} --corpus.paths [{{tmp}}/missing]", "does not exist"),
    ("corpus translation", f"{T} --corpus.name bible --corpus.paths [] --corpus.translation klingon",
     "unknown Bible translation"),
    ("corpus paths for a Bible", f"{T} --corpus.name bible", "corpus.paths is for your own text"),
    ("corpus books for own text", f"{T} --corpus.books odd", "corpus.books applies to the built-in Bibles only"),
    ("second paths empty", f"{T} --languages.kind real --languages.second.name text", "languages.second.paths is empty"),
    ("vocab for clones", f"{T} --languages.vocab joint", "languages.vocab applies to kind 'real' only"),
    ("frac_clone for a real pair", f"{T} --languages.kind real --languages.frac_clone 0.5",
     "languages.frac_clone applies to kind 'clone' only"),
    ("second on clones", f"{T} --languages.second.translation kjv", "languages.second is the second language of a real"),
    ("second with corpora", f"{T} {{many}} --languages.second.translation kjv", "languages.second is the second"),
    ("p with corpora", f"{T} {MANY.replace('--languages.p 0.1', '--languages.p 0.3')}", "languages.p mixes a pair or clones"),
    ("translation with corpora", f"{T} {{many}} --corpus.translation kjv", "its first entry is the base language"),
    ("translation for own text", f"{T} --corpus.translation kjv", "corpus.translation is for the Bibles, not text"),
    ("text_field for text", f"{T} --corpus.text_field body", "corpus.text_field applies to jsonl"),
    ("doc_per_line for jsonl", f"{T} --corpus.name jsonl --corpus.paths [{{jsonl}}]", "doc_per_line applies to name text"),
    ("vocab_size with a brought tokenizer", f"{T} --tokenizer.path {{afile}}", "tokenizer.vocab_size does not apply"),
    ("corpus jsonl field", f"{T} --corpus.name jsonl --corpus.doc_per_line false --corpus.paths [{{jsonl}}] --corpus.text_field body",
     "has no field 'body'"),
    ("corpus doc_per_line", f"{T} --corpus.doc_per_line maybe", "must be of type bool"),
    ("tokenizer too small", f"{T} --tokenizer.vocab_size 100", "vocab_size must be between 300"),
    ("tokenizer too large", f"{T} --tokenizer.vocab_size 100000", "between 300 and 65536"),
    ("tokenizer float", f"{T} --tokenizer.vocab_size 1e3", "must be of type int"),
    ("tokenizer for corpus", f"{T} --tokenizer.vocab_size 5000", "too large for this corpus"),
    ("joint tokenizer for corpora", f"{T} --languages.kind real --languages.second.name text --languages.second.paths "
     "[{corpus}] --languages.second.doc_per_line true --languages.vocab joint --tokenizer.vocab_size 5000", "the joint tokenizer has 2 x 5000 pieces"),
    ("second's test is the first's text", f"{T} --languages.kind real --languages.second.name text "
     "--languages.second.paths [{tmp}/b] --languages.second.valid [{tmp}/c] --languages.second.test [{corpus}]",
     "is held out for one language of corpus and languages.second and is training text of the other"),
    ("tokenizer path missing", f"{T} {OWN} --tokenizer.path {{tmp}}/missing.model", "missing.model not found"),
    ("tokenizer path not one", f"{T} {OWN} --tokenizer.path {{afile}}",
     "is neither a SentencePiece model nor a Hugging Face tokenizer.json"),
    ("tokenizer without eod", f"{T} {OWN} --tokenizer.path {{no_eod_model}}", "has no end-of-document symbol"),
    ("tokenizer empty", f"{T} {OWN} --tokenizer.path {{empty_model}}", "empty.model is empty: give a SentencePiece"),
    ("tokenizer second_path", f"{T} --tokenizer.second_path {{afile}}", "tokenizer.second_path is the second"),
    ("languages kind", f"{T} --languages.kind alien", "languages.kind must be clone or real"),
    ("languages p", f"{T} --languages.p 1.5", "languages.p must be in [0, 1]"),
    ("languages p nan", f"{T} --languages.p .nan", "languages.p must be a finite number"),
    ("languages clones", f"{T} --languages.num_clones 0", "num_clones must be between 1 and 64"),
    ("languages frac_clone", f"{T} --languages.frac_clone -0.1", "frac_clone must be in [0, 1]"),
    ("schedule trailing _", f"{T} --languages.schedule 0.1_", "malformed schedule '0.1_'"),
    ("schedule 0_1 stays", f"{T} --languages.schedule 0_1.5", "outside [0, 1]"),
    ("schedule words", f"{T} --languages.schedule half_half", "malformed schedule"),
    ("transforms empty", f"{T} --languages.transforms.L2 []", "languages.transforms.L2 is empty, so L2 would be L1"),
    ("schedule stages > steps", f"{T} --train.steps 2 --languages.schedule 0.1_0.5_0.9", "3 stages, more than the 2"),
    ("languages vocab", f"{T} --languages.vocab shared", "languages.vocab must be disjoint, anchored or joint"),
    ("names twice", f"{T} --languages.names [A,A]", "a name twice"),
    ("names path", f"{T} --languages.names [../x,B]", "'../x' is not a usable name"),
    ("names empty", f"{T} --languages.names ['',B]", "'' is not a usable name"),
    ("names count", f"{T} --languages.names [A]", "has 1 names but the run has 2"),
    ("real with clones", f"{T} --languages.kind real --languages.num_clones 2", "applies to kind 'clone' only"),
    # many languages (languages.corpora) and transforms
    ("corpora unknown language", f"{T} {MANY_BUT_CORPORA} --languages.corpora [web,klingon]", "unknown Bible translation 'klingon'"),
    ("corpora twice", f"{T} {MANY_BUT_CORPORA} --languages.corpora [web,en]", "names the translation web twice"),
    ("corpora one language", f"{T} {MANY_BUT_CORPORA} --languages.corpora [web]", "needs at least two languages"),
    ("corpora of clones", f"{T} --corpus.name bible --corpus.paths [] --languages.corpora [web,lsg]", "set languages.kind real"),
    ("corpora with corpus paths", f"{T} --languages.kind real --languages.corpora [web,lsg]",
     "with languages.corpora each entry is one language's text (a file or folder): leave corpus.paths"),
    ("corpora own text twice", f"{T} --corpus.paths [] --languages.kind real --languages.p 0.1 "
     "--languages.corpora [{tmp}/a,{tmp}/a]",
     "a twice: list each language's text once"),
    ("corpora own text missing", f"{T} --corpus.paths [] --languages.kind real --languages.p 0.1 "
     "--languages.corpora [{tmp}/a,{tmp}/b]",
     "/a does not exist"),
    ("corpora schedule", f"{T} {{many}} --languages.schedule 0.1_0.9", "the shares of languages.corpora are static"),
    ("mix sum", f"{T} {{many}} --languages.mix.en 0.7 --languages.mix.fr 0.2", "languages.mix shares must sum to 1"),
    ("mix share", f"{T} {{many}} --languages.mix.en 1.5 --languages.mix.fr -0.5", "languages.mix.en must be in [0, 1]"),
    ("p with a schedule", f"{T} --languages.schedule 0.1_0.9 --languages.p 0.5", "languages.p does not apply with a languages.schedule"),
    ("data_fraction with steps", f"{T} --train.data_fraction 0.5", "train.data_fraction applies with train.steps 0"),
    ("mix unknown language", f"{T} {{many}} --languages.mix.en 0.5 --languages.mix.de 0.5",
     "languages.mix: 'de' is no language of this run"),
    ("mix unknown language, bad sum", f"{T} {{many}} --languages.mix.en 0.5 --languages.mix.xx 0.7",
     "languages.mix: 'xx' is no language of this run"),  # the name first: fixing the sum would not help
    ("mix without corpora", f"{T} --languages.mix.L1 1", "sets the shares of languages.corpora"),
    ("temperature zero", f"{T} {{many}} --languages.temperature 0", "languages.temperature must be in (0,"),
    ("temperature negative", f"{T} {{many}} --languages.temperature -3.3", "languages.temperature must be in (0,"),
    ("unimax zero", f"{T} {{many}} --languages.unimax_epochs 0", "languages.unimax_epochs must be in (0,"),
    ("two share rules", f"{T} {{many}} --languages.temperature 2 --languages.unimax_epochs 1",
     "languages.temperature and languages.unimax_epochs each set the shares: keep one (on the command line "
     "--languages.mix '{{}}', --languages.temperature null or --languages.unimax_epochs null drops a file's)"),
    ("books disjoint pair", f"{T} --corpus.name bible --corpus.paths [] --corpus.books disjoint", "deals the training books"),
    ("books part", f"{T} --corpus.books 3/2", "corpus.books must be all, odd or even"),
    ("transform empty for a real language", f"{T} {{many}} --languages.transforms.lsg []",
     "languages.transforms.lsg is empty: it changes nothing; leave lsg out"),
    ("transform unknown language", f"{T} --languages.transforms.EN3 [inverted]",
     "languages.transforms: 'EN3' is no language of this run"),
    ("transform unknown", f"{T} --languages.transforms.L2 [clone,reversed]",
     "languages.transforms.L2 must be clone, inverted or permuted, got 'reversed'"),
    ("transform twice", f"{T} --languages.transforms.L2 [inverted,inverted]", "names a transform twice"),
    ("config: mix unknown language", "config {config} {many} --languages.mix.en 0.5 --languages.mix.de 0.5",
     "languages.mix: 'de' is no language of this run"),
    ("prepare: transform unknown language", "prepare {config} --quiet --languages.transforms.EN3 [inverted]",
     "languages.transforms: 'EN3' is no language of this run"),
    # own text beside the default second language, the French Bible: before, silently trained on it
    ("pair, second not set", f"{T} --languages.kind real", "languages.second is not set, so your text's partner"),
    ("transform clone base", f"{T} --languages.transforms.L1 [clone]", "L1 is the base language"),
    ("transform clone real", f"{T} {{pair}} --languages.transforms.FR [clone]", "a real language has them"),
    ("transform clone, unknown language", f"{T} {{pair}} --languages.transforms.EN9 [clone]",
     "languages.transforms: 'EN9' is no language of this run"),
    ("model preset", f"{T} --model.preset giant", "unknown model.preset 'giant'"),
    ("model layers", f"{T} --model.n_layers 1000000", "model.n_layers must be between 0 and 1024"),
    ("model heads", f"{T} --model.d_model 30 --model.n_heads 4", "divisible by model.n_heads"),
    ("model seq_len", f"{T} --model.seq_len 1", "model.seq_len must be between 2"),
    ("model size", f"{T} --model.n_layers 1024 --model.d_model 65536 --model.n_heads 64",
     "the model would have"),
    ("train seed", f"{T} --train.seed -1", "train.seed must be between 0"),
    ("train steps", f"{T} --train.steps -5", "train.steps must be between 0"),
    ("train data_fraction", f"{T} --train.data_fraction 0", "data_fraction must be in (0, 100]"),
    ("train batch", f"{T} --train.batch_size 0", "train.batch_size must be between 1"),
    ("train accum", f"{T} --train.grad_accum 3", "divisible by train.grad_accum"),
    ("train lr inf", f"{T} --train.lr .inf", "train.lr must be a finite number"),
    ("train lr zero", f"{T} --train.lr 0", "train.lr must be in (0, 10]"),
    ("train min_lr", f"{T} --train.min_lr 1", "must not exceed train.lr"),
    ("train precision", f"{T} --train.precision int8", "train.precision must be auto, fp32, bf16 or fp16"),
    ("train device", f"{T} --train.device tpu", "train.device must be auto, cpu or cuda"),
    ("train checkpoints", f"{T} --train.checkpoint_every 0", "checkpoint_every must be between 1"),
    ("train warmup", f"{T} --train.warmup -1", "train.warmup must be between 0"),
    ("train typo", f"{T} --train.stepz 5", "did you mean 'train.steps'"),
    ("train type", f"{T} --train.steps abc", "train.steps must be of type int"),
    ("eval window", f"{T} --eval.window 64", "eval.window (64) must be between 2 and model.seq_len"),
    ("eval last_n", f"{T} --eval.last_n 40", "eval.last_n must be between 1"),
    ("eval max_tokens", f"{T} --eval.max_tokens 5", "eval.max_tokens (5) must be 0"),
    ("eval batch", f"{T} --eval.batch_size 0", "eval.batch_size must be between 1"),
    ("held-out split shorter than a window", f"{T} --model.seq_len 4096 --eval.window 4096 --train.steps 1",
     "the test split of L1 has 3,353 tokens, fewer than one evaluation window of 4,096"),
    ("name escapes", "train {escape_yaml} --quiet", "'../escape' is not a usable name"),
    ("name absolute", "train {absolute_yaml} --quiet", "'/abs/olute' is not a usable name"),
    ("unknown section", f"{T} --foo.bar 1", "unknown key 'foo'"),
    ("a value is no section", f"{T} --train.steps.x 1", "'steps' is not a section"),
    ("override without value", f"{T} --train.steps", "needs a value"),
    ("override without value before an option", f"{T} --train.steps --out runs/x",  # (it blamed runs/x)
     "override --train.steps needs a value, e.g. --train.steps VALUE (the option --out came next; a value that "
     "starts with '--': --train.steps=VALUE)"),
    # --- config files
    ("duplicate yaml key", "train {dup_yaml} --out {out}", "duplicate key 'p'"),
    ("malformed yaml", "train {bad_yaml} --out {out}", "malformed YAML"),
    ("yaml not a mapping", "train {list_yaml} --out {out}", "must hold a mapping"),
    ("yaml not utf-8", "train {binary} --out {out}", "is not UTF-8"),
    ("config not found", "config nosuch-config", "config file not found"),
    ("config section typo", "config --languagse.p 0.5", "did you mean 'languages'"),
    ("config translation", "config --corpus.translation wbe", "did you mean 'web'"),
    ("resume not a run", "train {tmp}/nope --resume", "nope does not exist: resume with xling train RUN_DIR"),
    ("resume a file", "train {config} --resume", "is a file, not a run directory"),
    ("resume a run elsewhere", "train {run} --out {out} --resume", "drop --out"),
    # --- train, eval, sample
    ("train nothing", "train --out {out}", "give a config file"),
    ("train empty config", "train {blank}", "CONFIG is empty: give a value"),
    ("train empty out", "train {config} --out {blank}", "--out is empty: give a value"),
    ("report empty", "report {blank}", "NAME is empty: give a value"),
    ("train existing run", "train {config} --out {run} --quiet", "pass --resume"),
    ("train extra argument", f"{T} surplus", "unexpected argument 'surplus'"),
    ("train out is a file", "train {config} --out {afile} --quiet", "{afile} is a file, not a directory"),
    ("train out under a file", "train {config} --out {afile}/run --quiet", "{afile} is a file, not a directory"),
    ("train out under a link to nothing", "train {config} --out {dangling}/run --quiet",
     "{dangling} is a link to unmounted, which does not exist"),
    ("eval not a run", "eval {tmp}", "not a run directory"),
    ("status of nothing", "status {out}/typo", "typo does not exist"),
    ("status of a folder without runs", "status {tmp}", "is not a run directory and holds none"),
    ("eval --max-tokens", "eval {run} --max-tokens -1", "argument --max-tokens"),
    ("eval too few tokens", "eval {run} --max-tokens 5", "max_tokens 5: give 0 (the whole split) or more than one evaluation window"),
    ("eval split", "eval {run} --split holdout", "invalid choice: 'holdout'"),
    ("eval device", "eval {run} --device quantum", "device"),
    ("eval overrides", "eval {run} --train.steps 3", "takes no config overrides"),
    ("sample language", "sample {run} --language XX", "unknown language 'XX'"),
    ("sample tokens", "sample {run} --language L1 --tokens 0", "argument --tokens"),
    ("sample temperature", "sample {run} --language L1 --temperature -1", "argument --temperature"),
    ("sample top-k", "sample {run} --language L1 --top-k -2", "argument --top-k"),
    ("sample seed", "sample {run} --language L1 --seed -1", "argument --seed"),
    # --- export
    ("export not a run", "export {tmp} {out}", "not a run directory"),
    ("export-logs of a study's folder", "export-logs {study_folder} --log csv",
     "is a folder of runs (a study's?), not one run: pass one of them (a study's: its name and --root)"),
    ("export no checkpoint", "export {untrained} {out}", "has no usable checkpoint"),
    ("export language", "export {run} {out} --language XX", "unknown language 'XX'"),
    ("export format", "export {run} {out} --format onnx", "invalid choice: 'onnx'"),
    ("export narrow attention", "export {narrow} {out}", "GPT2LMHeadModel needs attention as wide as the model"),
    ("export out exists", "export {run} {afile}", "already exists"),
    ("export out under /proc", "export {run} /proc/xling-out", "cannot create /proc/xling-out"),
    ("export out empty", "export {run} {blank}", "OUT is empty: give a value"),
    ("export out here", "export {run} .", "'.' names no new directory to export to"),
    ("export under a file", "export {run} {afile}/hf", "{afile} is a file, not a directory"),
    ("export into the run", "export {run} {run}/hf", "is inside the run directory"),
    ("export language twice", "export {run} {out} --language L1 --language L2", "--language given twice (L1 and L2)"),
    ("train out under /proc", "train {config} --out /proc/xling-out --quiet", "cannot create /proc/xling-out"),
    ("teff out an existing /proc file", "teff --mono {mono_csv} --runs {runs_csv} --out /proc/version",
     "cannot replace /proc/version"),
    ("bench out under /proc", "bench --out /proc/xling-bench.json --steps 1", "cannot create /proc/xling-bench.json"),
    ("align figure under /proc", "align {run} --figure /proc/xling-align.png", "cannot create /proc/xling-align.png"),
    ("config a directory", "config {empty}", "is a directory: give a config file"),
    ("config a run directory", "config {run}", "(a run's config: its config.yaml)"),
    ("tokenizer path a directory", f"{T} {OWN} --tokenizer.path {{empty}}", "is a directory without a tokenizer.json"),
    ("teff mono a directory", "teff --mono {empty} --runs {runs_csv}", "a directory; pass an existing CSV file"),
    ("align-report out a file", "align-report {study} --out {afile}", "is a file: give the output a directory"),
    ("report out through a file", "report {study} --out {afile}/rep", "is a file, not a directory"),
    ("teff out a directory", "teff --mono {mono_csv} --runs {runs_csv} --out {empty}", "is a directory: give the output a file name"),
    ("teff out through a file", "teff --mono {mono_csv} --runs {runs_csv} --out {afile}/x.csv", "is a file, not a directory"),
    ("bench out through a file", "bench --out {afile}/b.json --steps 1", "is a file, not a directory"),
    ("align figure through a file", "align {run} --figure {afile}/x.png --sequences 2 --grad-sequences 0",
     "is a file, not a directory"),
    ("teff out under /proc", "teff --mono {mono_csv} --runs {runs_csv} --out /proc/xling.csv", "cannot create /proc/xling.csv"),
    # --- teff
    ("teff missing csv", "teff --mono {tmp}/no.csv --runs {runs_csv}", "file not found"),
    ("teff binary csv", "teff --mono {binary} --runs {runs_csv}", "is not UTF-8"),
    ("teff nul csv", "teff --mono {nul_csv} --runs {runs_csv}", "is not a number"),
    ("teff column", "teff --mono {no_ppl_csv} --runs {runs_csv}", "missing column(s) ppl"),
    ("teff ppl", "teff --mono {bad_mono} --runs {runs_csv}", "must be a positive finite number"),
    ("teff rising ladder", "teff --mono {rising_mono} --runs {runs_csv}",
     "language 'EN': the ladder's perplexity never falls with more data (60 at 0.1, 80 at 0.5, 200 at 1)"),
    ("teff bootstrap", "teff --mono {mono_csv} --runs {runs_csv} --bootstrap -1", "argument --bootstrap"),
    ("teff form", "teff --mono {mono_csv} --runs {runs_csv} --form cubic", "invalid choice: 'cubic'"),
    ("teff language", "teff --mono {mono_csv} --runs {fr_runs_csv}", "monolingual data only has"),
    # --- align and transfer
    ("align same language", "align {run} --pair L1 L1", "two different languages"),
    ("align unknown language", "align {run} --pair L1 XX", "unknown language 'XX'"),
    ("align sequences", "align {run} --sequences 0", "argument --sequences"),
    ("align not a run", "align {tmp}", "not a run directory"),
    ("transfer task missing", "transfer {run} --task {tmp}/task.csv", "not found"),
    ("transfer task type", "transfer {run} --task {afile}", "must end in .csv or .jsonl"),
    ("transfer language", "transfer {run} --task {task_csv} --train-language XX", "unknown language 'XX'"),
    ("transfer steps", "transfer {run} --steps 0", "argument --steps"),
    ("transfer lr", "transfer {run} --lr nan", "argument --lr"),
    # --- studies, reports, the store, the demo, bench
    ("study unknown", "study run nosuch-study --root {out}", "unknown study 'nosuch-study'"),
    ("study no name", "study run --root {out}", "needs a study name"),
    ("study bad file", "study run {bad_study} --root {out}", "unknown key"),
    ("study workers", "study run {study} --workers 0 --root {out}", "argument --workers"),
    ("study without its text", "study run {no_text_study} --root {out}", "/gone does not exist"),
    ("study root is a file", "study run {study} --root {afile}", "is a file, not a directory of runs"),
    ("study status root", "study status {study} --root {tmp}/missing", "is not a directory"),
    ("study status root too deep", "study status {study} --root {study_folder}", "holds a study's runs itself"),
    ("study run root too deep", "study run {study} --root {study_folder}", "holds a study's runs itself"),
    ("study action", "study fly {study}", "invalid choice: 'fly'"),
    ("study list a name", "study list {study}", "xling study list takes no study name"),
    ("study status workers", "study status {study} --workers 2", "xling study status takes no --workers (it applies "
                                                                  "to xling study run and sbatch)"),
    ("study run array", "study run {study} --array 3", "xling study run takes no --array"),
    ("align-report nothing trained", "align-report {study} --root {empty} --out {out}", "it has no trained multilingual run there"),
    ("study gpus", "study run {study} --gpus zero --root {out}", "--gpus takes auto or GPU numbers"),
    ("study gpus twice", "study run {study} --gpus 1,1 --root {out}", "distinct GPU numbers"),
    ("study runs per gpu", "study run {study} --runs-per-gpu 2 --root {out}", "--runs-per-gpu needs --gpus"),
    ("study ray gpu list", "study run {study} --engine ray --gpus 0 --root {out}", "use --gpus auto"),
    ("study log", "study run {study} --log json --root {out}", "invalid choice: 'json'"),
    ("study sbatch array", "study sbatch {study} --array 0 --root {out}", "argument --array"),
    ("train log", f"{T} --log json", "invalid choice: 'json'"),
    ("export-logs missing", "export-logs {tmp}/missing.yaml --log csv", "study file not found"),
    ("export-logs not a run", "export-logs {empty} --log csv", "is not a run directory"),
    ("export-logs nothing run", "export-logs {study} --root {empty} --log csv", "has no complete runs"),
    ("export-logs no logger", "export-logs {run}", "the following arguments are required: --log"),
    ("report unknown", "report nosuch-study --out {out}", "unknown study"),
    ("report root", "report {study} --root {tmp}/missing --out {out}", "is not a directory"),
    ("report nothing run", "report {study} --root {empty} --out {out}",
     "run `xling study run {study} --root {empty}` first"),  # the study's file: not found by its name
    ("store root", "store rebuild --root {tmp}/missing", "is not a directory"),
    ("store not sqlite", "store rebuild --root {empty} --db {afile}", "is not an SQLite file"),
    ("store foreign", "store rebuild --root {empty} --db {foreign_db}", "a table 'runs' of its own"),
    ("store db directory", "store rebuild --root {empty} --db {empty}", "is a directory"),
    ("align-report unknown", "align-report nosuch-study --out {out}", "unknown study"),
    ("align-report root", "align-report {study} --root {tmp}/missing --out {out}", "is not a directory"),
    ("demo workers", "demo --workers -1 --root {out}", "argument --workers"),
    ("export-logs target", "export-logs {tmp}/nothing-here --log csv", "nothing-here does not exist: give a run directory"),
    ("export-logs bare name", "export-logs nothing-here --log csv", "no run directory nothing-here exists, and unknown study"),
    ("export-logs logger", "export-logs {run} --log excel", "invalid choice: 'excel'"),
    ("prepare workers", "prepare {config} --workers 0", "argument --workers"),
    ("prepare no files", "prepare {config} --corpus.paths [{empty}]", "no *.txt files found"),
    ("prepare hf offline", "prepare {config} --corpus.name hf --corpus.doc_per_line false --corpus.paths [nobody/nothing]",
     "Hugging Face dataset"),
    ("bench preset", "bench --model.preset giant", "unknown model.preset"),
    ("bench steps", "bench --steps 0", "argument --steps"),
    ("unknown command", "fly", "invalid choice: 'fly'"),
    ("command typo", "trian {config}", "did you mean 'train'?"),
    ("option typo", "study run {study} --wokers 2", "unexpected argument '--wokers' (did you mean --workers?)"),
    ("config key without its section", f"{T} --steps 3", "unexpected argument '--steps' (did you mean --train.steps?)"),
    ("config file value", "config {nan_yaml}", "nan.yaml: train.lr must be a finite number, got nan"),  # (no file)
    ("config file value overridden", "config {nan_yaml} --train.lr -1", "error: train.lr must be in (0, 10], got -1"),
    ("config file key", "config {misplaced_yaml}", "misplaced.yaml: unknown key 'train.seq_len' (did you mean "
                                                   "'model.seq_len'?)"),
    ("config key spelt as an option", f"{T} --seq-len 64", "(did you mean --model.seq_len?)"),
    ("no suggestion far from any option", "eval {run} --colour red", "unexpected argument '--colour': see"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_corpus_dir, tiny_run):
    """The inputs the cases name, made once (the cases themselves must not change them)."""
    d = tmp_path_factory.mktemp("inputs")

    def write(name, text, mode="w"):
        path = d / name
        path.write_bytes(text) if mode == "wb" else path.write_text(text, encoding="utf-8")
        return str(path)

    empty = d / "empty"
    empty.mkdir()
    foreign = d / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE runs (name TEXT, score REAL)")
    study = tiny_study_dict(tiny_corpus_dir, name="bad-inputs")
    untrained, narrow = d / "untrained", d / "narrow"  # run directories without checkpoints
    for run, model in ((untrained, {}), (narrow, {"d_head": 8})):
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir, model=model)))
    no_eod = io.BytesIO()  # a SentencePiece model without an end-of-document (or EOS) symbol
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["a b c d e f g h"] * 50), model_writer=no_eod,
                                   vocab_size=10, bos_id=-1, eos_id=-1, minloglevel=2)
    bad_study = {**study, "colour": "blue"}
    no_text = {**study, "base": {**study["base"], "corpus": {**study["base"]["corpus"], "paths": [str(d / "gone")]}}}
    (d / "dangling").symlink_to("unmounted")  # a link to a scratch disk that is not there
    study_folder = d / "root" / "bad-inputs"  # what `--root root/STUDY` would point at: the runs themselves
    (study_folder / "a-run").mkdir(parents=True)
    (study_folder / "a-run" / "study.json").write_text("{}")
    return {
        "corpus": str(tiny_corpus_dir),
        "config": write("tiny.yaml", yaml.safe_dump(tiny_config_dict(tiny_corpus_dir))),
        "jsonl": write("docs.jsonl", '{"text": "a line of text"}\n'),
        "dup_yaml": write("dup.yaml", "languages:\n  p: 0.1\n  p: 0.5\n"),
        "bad_yaml": write("bad.yaml", "train: {steps: 3\n"),
        "misplaced_yaml": write("misplaced.yaml", "train:\n  seq_len: 64\n"),
        "nan_yaml": write("nan.yaml", "train:\n  lr: .nan\n"),
        "list_yaml": write("list.yaml", "- 1\n- 2\n"),
        "binary": write("binary.csv", b"\xff\xfe\x00garbage\x9c", mode="wb"),
        "nul_csv": write("nul.csv", b"language,fraction,ppl\nEN,0.1,\x0040\n", mode="wb"),
        "afile": write("a-file.txt", "not a directory\n"),
        "dangling": str(d / "dangling"),
        "mono_csv": write("mono.csv", "language,fraction,ppl\nEN,0.1,48\nEN,0.5,25\nEN,1.0,22\n"),
        "bad_mono": write("bad-mono.csv", "language,fraction,ppl\nEN,0.1,-48\n"),
        "rising_mono": write("rising-mono.csv", "language,fraction,ppl\nEN,0.1,60\nEN,0.5,80\nEN,1.0,200\n"),
        "no_ppl_csv": write("no-ppl.csv", "language,fraction\nEN,0.1\n"),
        "escape_yaml": write("escape.yaml", yaml.safe_dump({**tiny_config_dict(tiny_corpus_dir), "name": "../escape"})),
        "absolute_yaml": write("absolute.yaml", yaml.safe_dump({**tiny_config_dict(tiny_corpus_dir), "name": "/abs/olute"})),
        "runs_csv": write("runs.csv", "run,language,fraction,ppl\nr,EN,0.1,30\n"),
        "fr_runs_csv": write("fr-runs.csv", "run,language,fraction,ppl\nr,FR,0.1,30\n"),
        "task_csv": write("task.csv", "text,label\nthe king,a\nthe sea,b\nthe road,a\nthe gate,b\n"),
        "study": write("study.yaml", yaml.safe_dump(study)),
        "bad_study": write("bad-study.yaml", yaml.safe_dump(bad_study)),
        "no_text_study": write("no-text-study.yaml", yaml.safe_dump(no_text)),
        "foreign_db": str(foreign),
        "empty": str(empty),
        "study_folder": str(study_folder),
        "run": str(tiny_run),
        "untrained": str(untrained),
        "narrow": str(narrow),
        "no_eod_model": write("no-eod.model", no_eod.getvalue(), mode="wb"),
        "empty_model": write("empty.model", b"", mode="wb"),
    }


def _snapshot(path) -> dict:
    """Every file under `path` with its size and modification time (or the file itself)."""
    if not os.path.exists(path):
        return {}
    if os.path.isfile(path):
        return {path: (os.path.getsize(path), os.path.getmtime(path))}
    return {os.path.join(r, f): (os.path.getsize(os.path.join(r, f)), os.path.getmtime(os.path.join(r, f)))
            for r, _, names in os.walk(path) for f in names}


def test_the_table_is_large_and_covers_every_command_and_config_section():
    from xling.cli.app import COMMANDS
    from xling.config import RunConfig

    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1].split()[0] for c in CASES}
    assert {c.name for c in COMMANDS} <= commands, {c.name for c in COMMANDS} - commands
    sections = {f.name for f in RunConfig.__dataclass_fields__.values()} - {"name"}
    assert all(any(f"--{s}." in c[1] for c in CASES) for s in sections)


@pytest.mark.parametrize("name,command,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(files, tmp_path, monkeypatch, capsys, name, command,
                                                          message):
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # `runs/`, `reports/` and the like would land here
    values = {**files, "tmp": str(tmp_path), "out": str(out), "blank": ""}
    argv = [part.format(**values) for part in command.replace("{many}", MANY).replace("{pair}", PAIR).split()]
    watched = [files["run"], files["empty"], files["afile"], files["foreign_db"]]
    before = {p: _snapshot(p) for p in watched}
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("xling: error: "), err
    assert message.format(**values) in lines[0], lines[0]
    assert not out.exists() and not any(cwd.iterdir()), "something was written"
    assert {p: _snapshot(p) for p in watched} == before, "an input was changed"
    shutil.rmtree(cwd)


def test_a_received_run_with_crafted_language_names_writes_nothing_outside(files, tmp_path, capsys):
    """A run directory from someone else is validated like a config file: names are not paths."""
    run = tmp_path / "received" / "run"
    shutil.copytree(files["run"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["languages"]["names"] = ["../../../escape", "L2"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = sorted(tmp_path.rglob("*"))  # (the shared run may hold other tests' transfer results)
    for argv in (["transfer", str(run), "--task", files["task_csv"], "--steps", "1"], ["eval", str(run)]):
        assert main(argv) == 2
        assert "is not a usable name" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside the run or outside it


def test_stray_entries_among_checkpoints_are_left_alone(files, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    (run / "checkpoints" / "step_zzz").mkdir()  # sorts after every real checkpoint
    (run / "checkpoints" / "step_0000099").write_text("a file, not a checkpoint")
    assert main(["eval", str(run)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert (run / "checkpoints" / "step_zzz").is_dir() and (run / "checkpoints" / "step_0000099").is_file()
