"""Bring your own tokenizer: an existing SentencePiece model or a Hugging Face `tokenizer.json`.

`tokenizer.path` (the base language, or both languages of a joint vocabulary) and
`tokenizer.second_path` (a real second language) name such a file; it is used as it is, never
trained. Both kinds behave like the tokenizers xling trains (`tokenizer.Tokenizer`): encode without
adding any special token, decode, the piece string of every id (anchored merging matches those),
and the special ids:

- end of document (required): xling puts it between documents. The first of `<eod>`, `</s>`,
  `<|endoftext|>`, `<|end_of_text|>`, `<eos>` that the tokenizer has as a special (control)
  symbol, else a SentencePiece model's EOS; a tokenizer with none is refused.
- pad (optional): the tokenizer's own (`<pad>`, `[PAD]`, `<|pad|>`, or SentencePiece's pad id). A
  clone never shifts it; without one every id is cloned.

Special symbols written in the text stay text (as `<eod>` does for xling's own tokenizers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import XlingError
from .sources import optional_module
from .tokenizer import EOD_NAMES, Tokenizer

PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>")
HF_FILE = "tokenizer.json"


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer (tokenizer.json) with the interface of `Tokenizer`."""

    kind, suffix, words = "hf", ".json", False

    def __init__(self, data: bytes, path: Path | None = None):
        tokenizers = optional_module("tokenizers", "tokenizers", "Hugging Face tokenizer.json files")
        self._tok = _rust_call(lambda: tokenizers.Tokenizer.from_str(data.decode("utf-8")))
        # xling packs documents into sequences itself: a file's padding or truncation (to 512 tokens, say) would
        # cut documents or add ids the file chose
        self._tok.no_padding()
        self._tok.no_truncation()
        if hasattr(self._tok, "encode_special_tokens"):
            self._tok.encode_special_tokens = True  # "<|endoftext|>" written in a document is text
        self.model_bytes = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.path = path
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self._size = max(vocab.values()) + 1 if vocab else 0
        special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        found = [name for name in EOD_NAMES if name in vocab]
        found.sort(key=lambda name: name not in special)  # a special token first, then in EOD_NAMES order
        self.eod_id = vocab[found[0]] if found else None
        pads = [vocab[name] for name in PAD_NAMES if name in vocab]
        self.pad_id = pads[0] if pads else None
        unk = json.loads(data).get("model", {}).get("unk_token")
        self.unk_id = vocab.get(unk) if isinstance(unk, str) else None

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ids a tokenizer leaves unused still count)."""
        return self._size

    def encode(self, texts: list[str], threads: int | None = None) -> list[list[int]]:
        """Batch-encode without special tokens (no BOS/EOS a post-processor would add); one thread
        when `threads` is 1, else the library's thread pool."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.encode takes a list of strings")
        try:
            if threads == 1:
                return _rust_call(lambda: [self._tok.encode(text, add_special_tokens=False).ids for text in texts])
            return _rust_call(lambda: [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)])
        except ValueError as exc:  # (a WordLevel model whose unknown token is not in its vocabulary, say)
            raise XlingError(f"the tokenizer {self.path or ''} cannot encode the text: {exc}") from None

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def pieces(self) -> list[str]:
        """The token string of every id, in id order; an id the tokenizer does not use gets a
        placeholder no other tokenizer has."""
        return [self._tok.id_to_token(i) or f"<xling-unused-{i}>" for i in range(self.vocab_size)]

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}, path={self.path})"


def _rust_call(call):
    """A call into the tokenizers library; its errors, and the panics of its Rust code (which Python raises as a
    BaseException, past `except Exception`), as a ValueError of one line."""
    try:
        return call()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # (pyo3's PanicException is one)
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def _is_tokenizer_json(data: bytes) -> bool:
    if not data.lstrip()[:1] == b"{":
        return False
    try:
        parsed = json.loads(data)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("model"), dict)


def tokenizer_from_bytes(data: bytes, path: Path | None = None, words: bool = False) -> Tokenizer | HFTokenizer:
    """A tokenizer from a file's bytes, whichever kind they are (`words`: an xling-trained model)."""
    if _is_tokenizer_json(data):
        return HFTokenizer(data, path)
    return Tokenizer(data, path, words=words)


def load_brought(path: str, key: str = "tokenizer.path") -> Tokenizer | HFTokenizer:
    """The tokenizer in the file `path` (or `path`/tokenizer.json), checked; bad input is one line."""
    file = Path(path).expanduser()
    if file.is_dir() and (file / HF_FILE).is_file():
        file = file / HF_FILE
    if not file.is_file():
        what = "is a directory without a tokenizer.json" if file.is_dir() else "not found"
        raise XlingError(f"{key} {path} {what}: give a SentencePiece .model file or a Hugging Face tokenizer.json")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise XlingError(f"cannot read {key} {path} ({exc.strerror})") from None
    if not data.strip():  # (SentencePiece would print a C++ log line about it first)
        raise XlingError(f"{key} {path} is empty: give a SentencePiece .model file or a Hugging Face tokenizer.json")
    try:
        tokenizer = tokenizer_from_bytes(data, file)
    except XlingError:
        raise
    except Exception:  # SentencePiece's RuntimeError, the tokenizers library's Exception, bad UTF-8
        raise XlingError(f"{key} {path} is neither a SentencePiece model nor a Hugging Face tokenizer.json") from None
    if tokenizer.vocab_size < 2:
        raise XlingError(f"{key} {path} has an empty vocabulary")
    if tokenizer.eod_id is None:
        raise XlingError(f"{key} {path} has no end-of-document symbol (one of {', '.join(EOD_NAMES)} as a special "
                         "token): add one, e.g. SentencePiece's control_symbols=<eod> or an added special token")
    return tokenizer
