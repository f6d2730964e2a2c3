"""Downstream transfer (the paper's section 4): fine-tune on a task in one language, test zero-shot in all.

A linear classification head reads the final hidden state (after the final LayerNorm) of each
example's last token, as the paper does for GLUE. All weights are fine-tuned on examples in
the training language only; accuracy is then measured on held-out examples in every language.
Tasks: the built-in `bible-parts` or a local CSV / JSONL file (`load_task`).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.bible import PROBE_BOOKS, TEST_BOOKS, VALID_BOOKS, bible_verses, book_group, get_translation
from ..data.corpora import jsonl_objects
from ..data.sources import csv_row
from ..data.stream import pad_batch
from ..errors import XlingError
from ..fsio import atomic_write_json
from ..train.session import load_session
from ..train.trainer import lr_at

BIBLE_TASK = "bible-parts"
EVAL_SPLIT_NAMES = ("test", "eval", "dev", "validation", "valid")


@dataclass
class Example:
    texts: dict[int, tuple[str, str | None]]  # language index -> (text, optional second text)
    label: int
    origin: tuple = ()  # where it came from, e.g. (book, chapter, verse)


@dataclass
class Task:
    name: str
    labels: list[str]
    train: list[Example]
    eval: list[Example]


# --------------------------------------------------------------------------- the built-in task


def bible_parts_task(setup, per_class: int = 200, seed: int = 0) -> Task:
    """Verse -> part of the Bible, on books no language of any run was pretrained on."""
    books = set(PROBE_BOOKS + VALID_BOOKS + TEST_BOOKS)
    translations = {}
    for lang in range(setup.num_languages):
        corpus = setup.corpora[setup.source_of_language[lang]]
        if corpus.name == "bible":
            translations[lang] = get_translation(corpus.translation).name
        elif lang == 0 or setup.source_of_language[lang] == setup.source_of_language[0]:
            translations[lang] = "web"  # a local-text run: English is the natural guess for its base language
    missing = [setup.names[lang] for lang in range(setup.num_languages) if lang not in translations]
    if missing:  # nothing to test them in: zero-shot transfer is measured there
        raise XlingError(f"the bible-parts task has no text in {', '.join(missing)} (your own text): give --task "
                         f"FILE with {' and '.join(f'a text_{name}' for name in missing)} column")
    texts = {name: {(b, c, v): t for b, c, v, t in bible_verses(name) if b in books}
             for name in set(translations.values())}
    keys = sorted(set.intersection(*(set(t) for t in texts.values())))
    labels = sorted({book_group(b) for b, _, _ in keys})
    rng = np.random.default_rng(seed)
    splits = {}
    for split, parity in (("train", 1), ("eval", 0)):
        by_label = {label: [k for k in keys if book_group(k[0]) == label and k[1] % 2 == parity] for label in labels}
        n = min(per_class, *(len(v) for v in by_label.values()))
        chosen = []
        for label, ks in by_label.items():
            for i in np.sort(rng.choice(len(ks), size=n, replace=False)):
                b, c, v = ks[i]
                chosen.append(Example({lang: (texts[tr][(b, c, v)], None) for lang, tr in translations.items()},
                                      labels.index(label), (b, c, v)))
        splits[split] = chosen
    return Task(BIBLE_TASK, labels, splits["train"], splits["eval"])


# --------------------------------------------------------------------------- user task files


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of every row of a task file."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Excel) is not part of the header
    except UnicodeDecodeError:
        raise XlingError(f"task file {path} is not UTF-8 text: convert it to UTF-8") from None
    if path.suffix.lower() == ".csv":
        try:
            reader, rows = csv.DictReader(io.StringIO(text, newline="")), []
            while reader.fieldnames is not None:  # (reads the header)
                first = reader.line_num + 1  # a row's first line (line_num is its last: a quoted field spans lines)
                row = next(reader, None)
                if row is None:
                    break
                rows.append((first, csv_row(row, f"{path}:{first}")))
            return rows
        except csv.Error as exc:
            raise XlingError(f"task file {path} is not a readable CSV file ({exc}): fix or replace it") from None
    return jsonl_objects(path, text, "text and label fields")


def _hash_split(text: str) -> str:
    """Stable 80/20 split by text, independent of the other rows."""
    bucket = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") % 100
    return "train" if bucket < 80 else "eval"


def load_task_file(path: str | Path, setup) -> Task:
    """A GLUE-like classification task from a local CSV or JSONL file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise XlingError(f"task file {path} {what}: give a .csv or .jsonl file, or --task {BIBLE_TASK}")
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise XlingError(f"task file {path} must end in .csv or .jsonl")
    rows = _read_rows(path)
    if not rows:
        raise XlingError(f"task file {path} has no rows: add examples with columns text and label")
    for column in ("text", "label"):
        if column not in rows[0][1]:
            raise XlingError(f"task file {path} has no '{column}' column: a task needs columns text, label "
                             "(optional text2, split)")
    same_source = [setup.source_of_language[lang] == setup.source_of_language[0] for lang in range(setup.num_languages)]
    parsed = []
    for number, row in rows:
        label = "" if row.get("label") is None else str(row["label"]).strip()
        if not isinstance(row.get("text"), str) or not row["text"].strip() or not label:
            raise XlingError(f"{path}:{number}: an empty text or label: fill it in or remove the row")
        texts = {}
        for lang, name in enumerate(setup.names):
            text = row.get(f"text_{name}") or (row["text"] if same_source[lang] else None)
            second = row.get(f"text2_{name}") or (row.get("text2") if same_source[lang] else None)
            if text:
                texts[lang] = (str(text), str(second) if second else None)
        split = str(row.get("split") or "").strip().lower() or _hash_split(row["text"])
        if split not in ("train",) + EVAL_SPLIT_NAMES:
            raise XlingError(f"{path}:{number}: split '{split}': use train or test")
        parsed.append((texts, label, "train" if split == "train" else "eval"))
    labels = sorted({label for _, label, _ in parsed})
    if len(labels) < 2:
        raise XlingError(f"task file {path} has only one label ({labels[0]!r}): a classification task needs two or more")
    examples = {split: [Example(texts, labels.index(label)) for texts, label, s in parsed if s == split]
                for split in ("train", "eval")}
    for split, items in examples.items():
        if not items:
            raise XlingError(f"task file {path} has no {split} examples: add rows or a split column (train / test)")
    return Task(path.stem, labels, examples["train"], examples["eval"])


def load_task(task: str, setup) -> Task:
    """The task named `task`, with text in every language of the run it can have:

    - `bible-parts` (built in): which part of the Bible a verse comes from (history, wisdom,
      prophets, gospels, acts, letters, ...). Only books held out of pretraining in every language
      are used (probe, valid and test books), so no language saw any task text before; odd
      chapters are for fine-tuning and even chapters for evaluation, each class capped to the same
      number of verses so chance is 1 / classes. Clones see the same text through their id table,
      a real second language the other translation of the verse.
    - a local CSV or JSONL file with columns `text`, `label`, optional `text2` (a second text for
      pair tasks), optional `split` (train | test; without it a stable 80/20 split by text hash),
      and for a real second language `text_<LANG>` / `text2_<LANG>` columns.
    """
    return bible_parts_task(setup) if task == BIBLE_TASK else load_task_file(task, setup)


# --------------------------------------------------------------------------- model


class Classifier(nn.Module):
    """The pretrained GPT plus a linear head on the last real token's final hidden state."""

    def __init__(self, gpt, num_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.dims.d_model, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.gpt.ln_f(self.gpt.hidden_states(ids)[-1])
        last = hidden[torch.arange(len(ids), device=ids.device), lengths.to(ids.device) - 1]
        return self.head(last).float()


def encode_examples(setup, lang: int, examples: list[Example], max_len: int) -> list[torch.Tensor]:
    """Model ids of each example in one language: text [eod text2], cut to the model's length."""
    tokenizer = setup.tokenizers[setup.source_of_language[lang]]
    first = tokenizer.encode([ex.texts[lang][0] for ex in examples])
    second = tokenizer.encode([ex.texts[lang][1] or "" for ex in examples])
    out = []
    for ex, a, b in zip(examples, first, second):
        ids = a + ([tokenizer.eod_id] + b if ex.texts[lang][1] else [])
        out.append(setup.to_model(lang, ids[:max_len] or [tokenizer.eod_id]))  # in the language's word order
    return out


@torch.no_grad()
def predict(classifier: Classifier, seqs: list[torch.Tensor], device, autocast, batch_size: int = 64) -> torch.Tensor:
    classifier.eval()
    preds = []
    for start in range(0, len(seqs), batch_size):
        ids, lengths = pad_batch(seqs[start:start + batch_size])
        with autocast():
            preds.append(classifier(ids.to(device), lengths).argmax(-1).cpu())
    return torch.cat(preds)


def finetune(classifier: Classifier, seqs: list[torch.Tensor], labels: torch.Tensor, device, autocast,
             steps: int = 300, batch_size: int = 32, lr: float = 3e-4, seed: int = 0, scaler=None) -> list[float]:
    """Adam on all weights, warm-up then cosine decay; batches drawn with a seeded generator."""
    classifier.train()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, lr / 10, max(1, steps // 10))
        pick = rng.integers(0, len(seqs), size=batch_size)
        ids, lengths = pad_batch([seqs[i] for i in pick])
        with autocast():
            loss = F.cross_entropy(classifier(ids.to(device), lengths), labels[pick].to(device))
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


# --------------------------------------------------------------------------- the command


# Below this many examples in a split an accuracy is too coarse to compare settings by (each example moves it by > 3 %).
FEW_EXAMPLES = 30


def _task_notes(labels: list[str], n_train: int, counts: dict[str, int], eval_labels: np.ndarray) -> list[str]:
    """What makes a task's accuracies say little: few examples, or evaluation examples of one label only."""
    notes = []
    if n_train < FEW_EXAMPLES or min(counts.values(), default=0) < FEW_EXAMPLES:
        notes.append(f"few examples ({n_train} to fine-tune on, {min(counts.values(), default=0)} to evaluate): the "
                     f"accuracies are coarse; give {FEW_EXAMPLES} or more per split (a few hundred for a comparison)")
    if np.count_nonzero(eval_labels) == 1:
        notes.append(f"every evaluation example has the label {labels[int(np.argmax(eval_labels))]!r}: always "
                     "predicting it scores 1.0, so the accuracy says nothing of transfer; evaluate on every label")
    return notes


def transfer_run(run_dir, task: str = BIBLE_TASK, train_language: str | None = None, steps: int = 300,
                 batch_size: int = 32, lr: float = 3e-4, seed: int = 0, device: str = "auto") -> dict:
    """Fine-tune a run on a task in one language, evaluate in all; writes RUN_DIR/transfer/<task>-<lang>.json."""
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise XlingError("steps and batch_size must be >= 1 and lr > 0 (--steps, --batch-size, --lr)")
    session = load_session(run_dir, device=device)
    setup, cfg = session.setup, session.cfg
    names = setup.names
    lang = setup.index(train_language) if train_language is not None else 0
    data = load_task(task, setup)
    train_examples = [ex for ex in data.train if lang in ex.texts]
    if not train_examples:
        raise XlingError(f"the task has no training text in {names[lang]}: add a text_{names[lang]} column")
    max_len = cfg.model.seq_len
    torch.manual_seed(seed)
    classifier = Classifier(session.model, len(data.labels)).to(session.device)
    autocast = session.autocast  # as the run trained
    scaler = torch.amp.GradScaler(session.device.type) if session.precision == "fp16" else None
    train_labels = torch.tensor([ex.label for ex in train_examples])
    train_seqs = encode_examples(setup, lang, train_examples, max_len)
    losses = finetune(classifier, train_seqs, train_labels, session.device, autocast, steps, batch_size, lr, seed, scaler)
    train_acc = float((predict(classifier, train_seqs, session.device, autocast) == train_labels).float().mean())
    accuracy, counts, notes = {}, {}, []
    if data.name == BIBLE_TASK and any(c.name != "bible" for c in setup.corpora):
        notes.append("the run's text is not the Bibles: the bible-parts task takes its first language to be English "
                     "(the WEB Bible's verses); give --task FILE with your own text for another")
    for other, name in enumerate(names):
        examples = [ex for ex in data.eval if other in ex.texts]
        if not examples:  # no text in this language (a real language without a text_<LANG> column)
            notes.append(f"the task has no text in {name}: not evaluated there (a task file's text_{name} column)")
            continue
        gold = torch.tensor([ex.label for ex in examples])
        preds = predict(classifier, encode_examples(setup, other, examples, max_len), session.device, autocast)
        accuracy[name], counts[name] = float((preds == gold).float().mean()), len(examples)
    eval_labels = np.bincount([ex.label for ex in data.eval], minlength=len(data.labels))
    notes += _task_notes(data.labels, len(train_examples), counts, eval_labels)
    result = {"run": str(session.run.path), "step": session.step, "task": data.name, "labels": data.labels,
              "train_language": names[lang],
              "train_examples": len(train_examples), "eval_examples": counts, "steps": steps,
              "batch_size": batch_size, "lr": lr, "seed": seed, "final_loss": float(np.mean(losses[-20:])),
              "train_accuracy": train_acc, "accuracy": accuracy,
              "majority_baseline": float(eval_labels.max() / eval_labels.sum()), "notes": notes}
    atomic_write_json(session.run.transfer_path(data.name, names[lang]), result)
    return result
