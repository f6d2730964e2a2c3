"""Does an exported tokenizer.json segment text as the SentencePiece model it came from?

`xling export` turns a run's SentencePiece model (BPE or unigram) into a tokenizers-library
tokenizer (`xling.train.hf_export.sentencepiece_to_json`). This script trains SentencePiece models
on every other verse of the built-in Bibles, converts them with that function, and counts the
held-out verses whose ids differ from SentencePiece's (0 is the claim in the README).

    pip install -e '.[hf]'                          # tokenizers
    python benchmarks/tokenizer_export.py           # en and fr, BPE and unigram, 4,000 pieces
    python benchmarks/tokenizer_export.py --translations de --vocab-size 8000
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform

import sentencepiece as spm
import tokenizers

from xling.data.bible import bible_verses
from xling.data.tokenizer import Tokenizer
from xling.train.hf_export import sentencepiece_to_json


def differing(translation: str, model_type: str, vocab_size: int, byte_fallback: bool) -> tuple[int, int]:
    """(held-out verses whose ids differ, held-out verses) for one model."""
    verses = [text for *_, text in bible_verses(translation)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(verses[::2]), model_writer=model, model_type=model_type,
                                   vocab_size=vocab_size, byte_fallback=byte_fallback, num_threads=2, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    exported = tokenizers.Tokenizer.from_str(json.dumps(sentencepiece_to_json(Tokenizer(model.getvalue()))))
    exported.encode_special_tokens = True  # special tokens written in the text are text (transformers' split_special_tokens)
    held_out = verses[1::2]
    return sum(exported.encode(v, add_special_tokens=False).ids != sp.encode(v) for v in held_out), len(held_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--translations", nargs="+", default=["en", "fr"])
    parser.add_argument("--vocab-size", type=int, default=4000)
    args = parser.parse_args()
    print(f"{platform.node()} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"sentencepiece {spm.__version__}, tokenizers {tokenizers.__version__}")
    for translation in args.translations:
        for model_type in ("bpe", "unigram"):
            for byte_fallback in (True, False):
                bad, total = differing(translation, model_type, args.vocab_size, byte_fallback)
                print(f"{translation} {model_type:8} byte fallback {byte_fallback!s:5}: {bad} of {total:,} "
                      "held-out verses segmented differently")


if __name__ == "__main__":
    main()
