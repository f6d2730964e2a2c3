"""The word2vec control (the paper's section 4): CBOW on exactly the token stream the run trained on.

If clone-pair embeddings of the transformer grow more similar as a language gets rarer but a
bag-of-context model on the same stream does not, the alignment comes from the transformer's
shared computation, not from the statistics of the data. Each training sequence (one window,
all in one language) is a sentence of model-id strings, so EN1 and EN2 never share a context.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.stream import TrainStream, run_steps
from ..errors import XlingError
from ..model_dims import resolve_model
from .embeddings import embedding_similarity

GENSIM_HINT = "the word2vec control needs gensim: pip install 'gensim>=4.4'"


class TrainingSentences:
    """The run's training windows, in training order, as lists of id strings (re-iterable, chunked)."""

    def __init__(self, cfg, setup, chunk_rows: int = 4096):
        self.stream = TrainStream.of_run(cfg, setup, run_steps(cfg, setup))
        self.rows, self.chunk_rows = len(self.stream.plan), chunk_rows
        self.words = np.array([str(i) for i in range(setup.model_vocab)], dtype=object)

    def __len__(self) -> int:
        return self.rows

    def __iter__(self):
        for start in range(0, self.rows, self.chunk_rows):
            x, y, _ = self.stream.rows(start, min(start + self.chunk_rows, self.rows))
            windows = torch.cat([x, y[:, -1:]], dim=1).numpy()
            for row in windows:
                yield self.words[row].tolist()


def train_word2vec(sentences, vocab_size: int, vector_size: int = 128, window: int = 5, epochs: int = 1,
                   negative: int = 20, workers: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """CBOW word2vec (negative sampling) -> (input vectors [V, D], output vectors [V, D], present [V]).

    Rows of ids that never occur are zero and marked absent. Sentences are id strings. One worker
    thread by default: gensim's multi-threaded training depends on how the threads are scheduled,
    so two runs of it differ (on a cpu-s run, 2026-11-27: the input vectors summed to 3,731 and
    4,307 in two runs with two threads, identically to 864 in runs with one); one thread costs about
    a second per run at CPU scale.
    """
    try:
        from gensim.models import Word2Vec
    except ImportError:
        raise XlingError(GENSIM_HINT) from None
    model = Word2Vec(sentences=sentences, vector_size=vector_size, window=window, epochs=epochs, sg=0,
                     min_count=1, workers=workers, seed=seed, negative=negative)
    ids = np.array([int(key) for key in model.wv.index_to_key], dtype=np.int64)
    present = np.zeros(vocab_size, dtype=bool)
    present[ids] = True
    vin, vout = torch.zeros(vocab_size, vector_size), torch.zeros(vocab_size, vector_size)
    vin[ids] = torch.from_numpy(np.asarray(model.wv.vectors, dtype=np.float32))
    vout[ids] = torch.from_numpy(np.asarray(model.syn1neg, dtype=np.float32))
    return vin, vout, present


def word2vec_control(cfg, setup, lang_a: int, lang_b: int, counts: np.ndarray, vector_size: int = 0,
                     window: int = 5, epochs: int = 1, negative: int = 20, workers: int = 1) -> dict:
    """Clone-pair similarity of word2vec embeddings trained on the run's own training stream.

    Defaults follow the paper's authors: the model's width (`vector_size` 0), gensim's window
    of 5, 20 negative samples and one pass, like the model's one pass over the stream. Returns
    the same structure as the model's embedding metrics, plus the knobs used.
    """
    vector_size = vector_size or resolve_model(cfg.model, 1).d_model
    sentences = TrainingSentences(cfg, setup)
    vin, vout, present = train_word2vec(sentences, setup.model_vocab, vector_size, window, epochs, negative,
                                        workers, cfg.train.seed)
    result = embedding_similarity({"input": vin, "output": vout}, setup.table, lang_a, lang_b, counts, present)
    result["settings"] = {"algorithm": "CBOW (gensim)", "vector_size": vector_size, "window": window,
                          "epochs": epochs, "negative": negative, "sentences": len(sentences)}
    return result
