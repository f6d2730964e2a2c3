"""The paper's evaluation protocol on cases that can be checked by hand."""

import math
import re

import torch

from xling.train.evaluate import perplexity_result, scored_positions, stream_nll, window_starts


def test_window_starts_and_scored_positions_by_hand():
    # 12 tokens, windows of 4 inputs (+1 target), advancing by 2: starts 0, 2, 4, 6.
    assert window_starts(12, window=4, last_n=2).tolist() == [0, 2, 4, 6]
    # window at s scores targets s+3 and s+4 (the last 2 of the targets s+1..s+4)
    assert scored_positions(12, 4, 2).tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    assert window_starts(4, 4, 2).tolist() == []  # too short for one window


def test_every_scored_token_is_scored_once_with_enough_context():
    n, window, last_n = 1000, 64, 16
    pos = scored_positions(n, window, last_n)
    assert len(set(pos.tolist())) == len(pos)
    assert pos.min() == window - last_n + 1  # each scored target sees >= window - last_n inputs
    assert pos.max() <= n - 1
    assert (pos[1:] - pos[:-1] == 1).all()  # contiguous


def test_stream_nll_scores_exactly_the_protocol_targets():
    tokens = torch.arange(12)
    seen = []

    def nll(x, y):  # loss of a target = its stream position, so the sum identifies what was scored
        seen.append(x.shape)
        return y.double()

    told = []  # (a progress bar is told of every batch of windows)
    total, count = stream_nll(nll, tokens, window=4, last_n=2, batch_size=3, on_batch=told.append)
    assert count == 8
    assert total == sum(range(3, 11))
    assert seen == [(3, 4), (1, 4)]  # batches of windows
    assert told == [3, 1] and sum(told) == len(window_starts(len(tokens), 4, 2))


def test_perplexity_is_exp_of_mean_loss():
    result = perplexity_result(total_nll=4 * math.log(5.0), count=4)
    assert math.isclose(result["ppl"], 5.0)
    assert result["tokens_scored"] == 4


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    vocab = 37
    tokens = torch.randint(0, vocab, (500,))

    def nll(x, y):
        return torch.full(y.shape, math.log(vocab), dtype=torch.float64)

    result = perplexity_result(*stream_nll(nll, tokens, window=32, last_n=8, max_tokens=300))
    assert math.isclose(result["ppl"], vocab)
    assert result["tokens_scored"] == len(scored_positions(300, 32, 8))


def test_too_short_reads_only_the_languages_scored():
    from types import SimpleNamespace

    from xling.train.evaluate import too_short

    def tokens(source, split):  # the untrained language's text is not on this machine: never read
        assert source == 0, "read a language left out"
        return torch.zeros(40 if split == "test" else 30)

    setup = SimpleNamespace(names=["L1", "FR"], source_of_language=[0, 1], tokens=tokens)
    assert too_short(setup, "test", 32, 0, only={"L1"}) == {}
    assert too_short(setup, "valid", 32, 0, only={"L1"}) == {"L1": 30}  # 30 < 32 + 1
    assert too_short(setup, "test", 32, 35, only={"L1"}) == {}  # max_tokens cuts to 35 >= 33


def test_a_held_out_split_too_short_for_one_window(tiny_corpus_dir, tmp_path, caplog):
    """A test split too short for one window is refused before training (its perplexity would be no number); a valid
    split so short leaves its languages out of the validations, with a warning."""
    import pytest

    import xling
    from conftest import tiny_config_dict
    from xling.errors import XlingError

    short = tmp_path / "short.txt"
    short.write_text("In the beginning\n")
    held_out = str(tiny_corpus_dir / "part0.txt")  # (inside the folder of paths: left out of the training text)

    def config(valid, test):
        corpus = {"name": "text", "paths": [str(tiny_corpus_dir)], "doc_per_line": True, "valid": [valid],
                  "test": [test]}
        return xling.Config(tiny_config_dict(tiny_corpus_dir, corpus=corpus))

    run = xling.train(config(str(short), held_out), tmp_path / "short-valid", progress=False)
    assert re.search(r"the valid split of L1 has \d+ tokens, fewer than one evaluation window of 32 \(\+1 target\): "
                     "L1, L2 not validated during training", caplog.text), caplog.text
    assert run.info["valid"] == {} and all(math.isfinite(r["ppl"]) for r in run.evaluation().values())
    with pytest.raises(XlingError, match=r"the test split of L1 has \d+ tokens, fewer than one evaluation window of 32"):
        xling.train(config(held_out, str(short)), tmp_path / "short-test", progress=False)
    assert not (tmp_path / "short-test").exists()
    untested = xling.train(config(held_out, str(short)), tmp_path / "short-test", evaluate=False, progress=False)
    with pytest.raises(XlingError, match=r"the test split of L1 has \d+ tokens.*xling eval --window"):
        untested.evaluate()
