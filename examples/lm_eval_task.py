"""A local lm-evaluation-harness task for exported xling models: each language's last-word prediction on held-out text.

lm-eval's own tasks download from the Hugging Face hub. This writes one that needs nothing from it,
from the built-in Bible's test books (no run trained on them) or from a text file of one passage per line:

    python examples/lm_eval_task.py tasks/                       # 500 sentences of the World English Bible
    python examples/lm_eval_task.py tasks/ --text my-test.txt    # or your own held-out passages
    xling export runs/clone-90-10 hf-en2 --format hf --language EN2
    lm_eval --model hf --model_args pretrained=hf-en2,dtype=float32 --include_path tasks \\
        --tasks xling_lastword --device cpu --batch_size 8

The built-in text is cut into sentences (`xling.Config.documents`, the same held-out text for
every language of a run). Each item is a passage without its last word (the context) and that word (the target, trailing
punctuation removed), as in LAMBADA. lm-eval reports `acc` (whether the target is the model's
greedy continuation) and `perplexity` (of the targets' log-likelihoods). An export scores one
language, so the same task run on the EN1 and EN2 exports of a cloned run compares the two
languages on the same text.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from pathlib import Path

import xling

TASK = "xling_lastword"

# lm-eval's task format (https://github.com/EleutherAI/lm-evaluation-harness, docs/task_guide.md): a local JSON
# file through the `json` loader of Hugging Face datasets, scored by log-likelihood of the target.
TEMPLATE = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: " {{{{target}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def cloze_items(passages, max_items: int = 500, min_words: int = 8) -> list[dict]:
    """Passages of at least `min_words` words whose last word is alphabetic, as {context, target}."""
    items, marks = [], string.punctuation + "“”‘’«»¡¿"
    for passage in passages:
        words = passage.split()
        while words and not words[-1].strip(marks):  # detached punctuation (French " !", " »") is not a word
            words.pop()
        target = words[-1].rstrip(marks) if len(words) >= min_words else ""
        if target.isalpha():
            items.append({"context": " ".join(words[:-1]), "target": target})
        if len(items) == max_items:
            break
    return items


def bible_test_passages(translation: str) -> list[str]:
    """The sentences of the built-in corpus's test books (held out from every run's training text)."""
    chapters = next(iter(xling.Config({"corpus": {"translation": translation}}).documents("test").values()))
    return [sentence for chapter in chapters for sentence in re.split(r"(?<=[.!?])\s+", chapter)]


def write_task(items: list[dict], out: Path) -> Path:
    """The task's data (JSON lines) and its YAML in `out`; returns the YAML's path."""
    if not items:
        raise xling.XlingError("no passage has at least 8 words ending in an alphabetic word: nothing to score")
    out.mkdir(parents=True, exist_ok=True)
    data = (out / f"{TASK}.jsonl").resolve()
    data.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    task = out / f"{TASK}.yaml"
    task.write_text(TEMPLATE.format(task=TASK, data=json.dumps(str(data))), encoding="utf-8")
    return task


def main(out: str | Path, text: str | Path | None = None, translation: str = "web", max_items: int = 500) -> Path:
    passages = Path(text).read_text(encoding="utf-8").splitlines() if text else bible_test_passages(translation)
    items = cloze_items(passages, max_items)
    task = write_task(items, Path(out))
    print(f"wrote {task} ({len(items)} items); score an export with: lm_eval --model hf --model_args "
          f"pretrained=EXPORT,dtype=float32 --include_path {out} --tasks {TASK} --device cpu")
    return task


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="directory for the task (lm_eval --include_path)")
    parser.add_argument("--text", help="held-out passages, one per line (default: the built-in Bible's test books)")
    parser.add_argument("--translation", default="web", help="built-in translation (default web)")
    parser.add_argument("--max-items", type=int, default=500, help="at most this many items (default 500)")
    args = parser.parse_args()
    if args.max_items < 1:
        parser.error(f"--max-items must be at least 1, got {args.max_items}")
    try:
        main(args.out, args.text, args.translation, args.max_items)
    except (xling.XlingError, OSError, UnicodeDecodeError) as e:
        problem = f"{args.text} is not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e
        print(f"lm_eval_task.py: {problem}", file=sys.stderr)
        raise SystemExit(2) from None
