"""Fine-tune in one language, evaluate zero-shot in all: task files, the built-in task, the command."""

import csv
import json

import numpy as np
import pytest
import torch

from conftest import make_documents, requires_bible, tiny_config
from xling.analysis.transfer import Example, encode_examples, load_task_file, transfer_run
from xling.cli import main
from xling.data.stream import encode_text, prepare_languages
from xling.data.tokenizer import EOD_ID
from xling.errors import XlingError
from xling.train.rundir import RunDir


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def king_task(tmp_path_factory):
    """Sentence -> does it mention the king? Enough rows for both splits of the 80/20 hash split."""
    sentences = [s.strip() + "." for doc in make_documents(30, seed=5) for s in doc.split(".") if s.strip()]
    rows = [(s, "king" if "king" in s else "other") for s in dict.fromkeys(sentences)]
    return write_csv(tmp_path_factory.mktemp("task") / "king.csv", rows)


def test_transfer_reports_every_language(tiny_run, king_task):
    res = transfer_run(tiny_run, str(king_task), steps=15, batch_size=8)
    assert set(res["accuracy"]) == {"L1", "L2"} and res["train_language"] == "L1"
    assert all(0.0 <= acc <= 1.0 for acc in res["accuracy"].values())
    assert res["labels"] == ["king", "other"]
    saved = json.loads((tiny_run / "transfer" / "king-L1.json").read_text())
    assert saved["accuracy"] == res["accuracy"]
    assert saved["step"] == RunDir(tiny_run).newest_checkpoint_step()  # (a result of another checkpoint is redone)


def test_all_shared_vocabulary_gives_identical_accuracies(tiny_corpus_dir, tmp_path, king_task):
    from xling.train.trainer import Trainer

    run = tmp_path / "shared"
    Trainer(tiny_config(tiny_corpus_dir, languages={"frac_clone": 0.0}), run).fit(progress=False)
    res = transfer_run(run, str(king_task), train_language="L2", steps=10, batch_size=8)
    assert res["accuracy"]["L1"] == res["accuracy"]["L2"]


def test_transfer_command_prints_a_table(tiny_run, king_task, capsys):
    assert main(["transfer", str(tiny_run), "--task", str(king_task), "--steps", "5", "--batch-size", "4",
                 "--train-language", "L2"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuned in L2" in out and "L1" in out


def test_pair_examples_are_joined_by_the_end_of_document_id(tiny_corpus_dir):
    setup = prepare_languages(tiny_config(tiny_corpus_dir))
    ex = Example({0: ("the king saw", "the sea"), 1: ("the king saw", "the sea")}, 0)
    for lang in (0, 1):
        (ids,) = encode_examples(setup, lang, [ex], max_len=64)
        eod = setup.table[lang][EOD_ID]
        expected = torch.cat([encode_text(setup, lang, "the king saw"), eod.view(1), encode_text(setup, lang, "the sea")])
        assert torch.equal(ids, expected)
    (short,) = encode_examples(setup, 0, [ex], max_len=3)
    assert len(short) == 3


def test_task_file_columns_splits_and_labels(tiny_corpus_dir, tmp_path):
    setup = prepare_languages(tiny_config(tiny_corpus_dir))
    path = tmp_path / "pairs.jsonl"
    rows = [{"text": f"a {i}", "text2": "b", "label": i % 3, "split": "train" if i < 6 else "test"} for i in range(9)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    task = load_task_file(path, setup)
    assert task.labels == ["0", "1", "2"] and len(task.train) == 6 and len(task.eval) == 3
    assert task.train[1].texts == {0: ("a 1", "b"), 1: ("a 1", "b")} and task.train[1].label == 1


@pytest.mark.parametrize("name, content, match", [
    ("missing.csv", None, "not found"),
    ("task.txt", "text,label\na,b\n", "must end in .csv or .jsonl"),
    ("nolabel.csv", "text,class\na,b\n", "no 'label' column"),
    ("empty.csv", "", "has no rows"),
    ("one.csv", "text,label\na,x\nb,x\nc,x\n", "only one label"),
    ("blank.csv", "text,label\na,x\n,y\n", "blank.csv:3: an empty text or label"),
    ("blank.jsonl", '{"text": "a", "label": 1}\n\n{"text": "", "label": 2}\n', "blank.jsonl:3: an empty text"),
    ("nosplit.csv", "text,label,split\na,x,train\nb,y,train\n", "no eval examples"),
    ("badsplit.csv", "text,label,split\na,x,train\nb,y,holdout\n", "badsplit.csv:3: split 'holdout'"),
    ("multiline.csv", 'text,label,split\n"a\nb",x,train\nc,y,holdout\n', "multiline.csv:4: split 'holdout'"),
    ("multiline2.csv", 'text,label,split\na,x,train\n"b\nc",y,holdout\n', "multiline2.csv:3: split 'holdout'"),
    ("comma.csv", "text,label\na,x\nhello, world,y\n", "comma.csv:3: 3 fields where the header has 2"),  # not y's text
    ("short.csv", "text,label,split\na,x,train\nb,y\n", "short.csv:3: 2 fields where the header has 3"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{oops\n', "bad.jsonl:2: invalid JSON"),
])
def test_task_file_errors(tiny_corpus_dir, tmp_path, name, content, match):
    setup = prepare_languages(tiny_config(tiny_corpus_dir))
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(XlingError, match=match):
        load_task_file(path, setup)


def test_transfer_user_errors(tiny_run, king_task, capsys):
    assert main(["transfer", str(tiny_run), "--task", str(king_task), "--train-language", "FR"]) == 2
    assert "unknown language 'FR'" in capsys.readouterr().err
    assert main(["transfer", str(tiny_run), "--task", "nope.csv"]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.corpus
@requires_bible
def test_bible_parts_task_is_balanced_and_held_out(tiny_corpus_dir):
    from xling.analysis.transfer import bible_parts_task
    from xling.data.bible import TRAIN_BOOKS

    setup = prepare_languages(tiny_config(tiny_corpus_dir))
    task = bible_parts_task(setup, per_class=50)
    assert len(task.labels) == 7 and "gospels" in task.labels
    for split in (task.train, task.eval):
        counts = [sum(ex.label == k for ex in split) for k in range(len(task.labels))]
        assert counts == [50] * 7
    for split, parity in ((task.train, 1), (task.eval, 0)):
        assert all(ex.origin[0] not in TRAIN_BOOKS and ex.origin[1] % 2 == parity for ex in split)
    assert all(ex.texts[0] == ex.texts[1] for ex in task.train)  # clones: the same English text


def test_csv_with_byte_order_mark_and_quoted_fields(tiny_corpus_dir, tmp_path):
    setup = prepare_languages(tiny_config(tiny_corpus_dir))
    path = tmp_path / "excel.csv"
    path.write_text('\ufefftext,label,split\n"the king, at night\nsaw the sea",a,train\nthe gate,b,test\n',
                    encoding="utf-8")
    task = load_task_file(path, setup)
    assert task.train[0].texts[0][0] == "the king, at night\nsaw the sea" and task.labels == ["a", "b"]


def test_the_bible_task_on_a_run_of_your_own_text_says_what_it_assumed(tiny_run, capsys):
    assert main(["transfer", str(tiny_run), "--steps", "2", "--batch-size", "4"]) == 0
    err = capsys.readouterr().err
    assert "note: the run's text is not the Bibles: the bible-parts task takes its first language to be English" in err


def test_the_bible_task_refuses_a_pair_of_your_own_text(tiny_corpus_dir, tmp_path, capsys):
    from xling.train.trainer import Trainer

    second = {"name": "text", "paths": [str(tiny_corpus_dir)], "doc_per_line": True}
    run = tmp_path / "pair"
    Trainer(tiny_config(tiny_corpus_dir, languages={"kind": "real", "p": 0.5, "second": second},
                        train={"steps": 2}), run).fit(progress=False)
    assert main(["transfer", str(run), "--steps", "1"]) == 2
    assert "the bible-parts task has no text in L2 (your own text): give --task FILE" in capsys.readouterr().err


def test_a_task_too_small_or_of_one_label_says_its_accuracy_says_little():
    from xling.analysis.transfer import _task_notes

    few, one_label = _task_notes(["no", "yes"], 2, {"EN1": 1, "EN2": 1}, np.array([0, 1]))
    assert few.startswith("few examples (2 to fine-tune on, 1 to evaluate)") and "'yes'" in one_label
    assert _task_notes(["no", "yes"], 200, {"EN1": 50, "EN2": 50}, np.array([20, 30])) == []
