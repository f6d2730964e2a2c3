"""The language layer: clone maps, vocabulary merges, mixtures, schedules, token accounting."""

import numpy as np
import pytest
import torch

from xling.data import languages as L
from xling.data import mixture as MIX
from xling.errors import XlingError
from xling.notation import parse_schedule


def test_full_clone_shifts_every_id_but_pad():
    table = L.clone_table(vocab_size=10, num_clones=1)
    assert table.shape == (2, 10)
    assert table[0].tolist() == list(range(10))
    assert table[1].tolist() == [0] + [i + 10 for i in range(1, 10)]


def test_many_clones_occupy_their_own_blocks():
    V, k = 50, 4
    table = L.clone_table(V, k)
    for lang in range(1, k + 1):
        assert table[lang, 0] == 0
        assert table[lang, 1:].tolist() == [i + lang * V for i in range(1, V)]
    used = table[:, 1:].flatten()
    assert len(set(used.tolist())) == used.numel()  # no id shared between languages
    assert int(table.max()) == (k + 1) * V - 1


def test_partial_clone_keeps_seeded_anchor_subset_shared():
    V = 1001
    table = L.clone_table(V, num_clones=2, frac_clone=0.3, seed=7)
    cloned = table[1] != table[0]
    assert int(cloned.sum()) == 300  # round(0.3 * (V - 1)); pad is never a candidate
    assert not cloned[0]
    assert torch.equal(cloned, table[2] != table[0])  # the same subset for every clone
    assert torch.equal(table[1][cloned], table[0][cloned] + V)
    assert torch.equal(table, L.clone_table(V, 2, 0.3, seed=7))
    assert not torch.equal(table, L.clone_table(V, 2, 0.3, seed=8))


@pytest.mark.parametrize("frac,expected", [(0.0, 0), (1.0, 99)])
def test_partial_clone_extremes(frac, expected):
    table = L.clone_table(100, 1, frac)
    assert int((table[1] != table[0]).sum()) == expected


def test_apply_languages_maps_each_row_in_its_language():
    table = L.clone_table(10, 2)
    base = torch.tensor([[0, 3, 9], [1, 0, 2], [5, 5, 0]])
    out = L.apply_languages(base, torch.tensor([0, 1, 2]), table)
    assert out.tolist() == [[0, 3, 9], [11, 0, 12], [25, 25, 0]]


def test_inverse_table_round_trips_and_marks_foreign_ids():
    table = L.clone_table(20, 2, frac_clone=0.5, seed=1)
    inverse = L.inverse_table(table, 60)
    for lang in range(3):
        assert torch.equal(inverse[lang, table[lang]], torch.arange(20))
    assert inverse[0, 25] == -1 and inverse[1, 25] in (-1, 5)


def test_disjoint_merge_shifts_second_language():
    table, size = L.merge_table(["<pad>", "<unk>", "a", "b"], ["<pad>", "<unk>", "a", "c"], "disjoint")
    assert size == 8
    assert table.tolist() == [[0, 1, 2, 3], [0, 5, 6, 7]]


def test_anchored_merge_shares_identical_strings_and_numbers_the_rest_in_order():
    en = ["<pad>", "<unk>", "<eod>", "▁the", "▁de", "s"]
    fr = ["<pad>", "<unk>", "<eod>", "▁le", "▁de", "x", "s", "▁la"]
    table, size = L.merge_table(en, fr, "anchored")
    assert table[0].tolist()[:6] == [0, 1, 2, 3, 4, 5]
    # shared: <unk>, <eod>, ▁de, s; new ids 6, 7, 8 for ▁le, x, ▁la in French id order
    assert table[1].tolist() == [0, 1, 2, 6, 4, 7, 5, 8]
    assert size == 9
    assert table.shape == (2, 8)


def test_merge_rejects_unknown_mode():
    with pytest.raises(XlingError, match="disjoint"):
        L.merge_table(["a"], ["a"], "shared")


def test_uniform_is_a_pure_function_of_seed_stream_index():
    idx = np.arange(1000)
    a = MIX.uniform(3, 1, idx)
    assert np.array_equal(a, MIX.uniform(3, 1, idx))
    assert np.array_equal(a[500:], MIX.uniform(3, 1, idx[500:]))  # no hidden state
    assert not np.array_equal(a, MIX.uniform(4, 1, idx))
    assert not np.array_equal(a, MIX.uniform(3, 2, idx))
    assert a.min() >= 0 and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.03


@pytest.mark.parametrize("p,k", [(0.1, 1), (0.5, 1), (0.9, 3), (0.5, 9)])
def test_language_shares_match_p_within_sampling_error(p, k):
    n = 200_000
    langs = MIX.choose_languages(seed=11, rows=np.arange(n), p=p, num_other=k)
    shares = np.bincount(langs, minlength=k + 1) / n
    for lang in range(k + 1):
        expected = 1 - p if lang == 0 else p / k
        sigma = np.sqrt(expected * (1 - expected) / n)
        assert abs(shares[lang] - expected) < 5 * sigma


def test_p_zero_and_one_are_exact():
    rows = np.arange(5000)
    assert (MIX.choose_languages(0, rows, 0.0, 2) == 0).all()
    assert (MIX.choose_languages(0, rows, 1.0, 2) > 0).all()


def test_parse_schedule():
    assert parse_schedule("0.1_0.9") == [0.1, 0.9]
    assert parse_schedule("0.5") == [0.5]
    assert parse_schedule("0_1_0.5_0.5") == [0.0, 1.0, 0.5, 0.5]


@pytest.mark.parametrize("bad", ["", "0.1__0.9", "a_b", "0.1_1.5", "-0.1", "0.1,0.9"])
def test_malformed_schedules_are_rejected(bad):
    with pytest.raises(XlingError):
        parse_schedule(bad)


def test_stage_boundaries_split_steps_equally():
    stages = MIX.stage_of_step(np.arange(10), total_steps=10, num_stages=2)
    assert stages.tolist() == [0] * 5 + [1] * 5
    stages = MIX.stage_of_step(np.arange(10), total_steps=10, num_stages=3)
    assert stages.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert MIX.p_per_step(0.3, "", 4).tolist() == [0.3] * 4
    assert MIX.p_per_step(0.3, "0.1_0.9", 4).tolist() == [0.1, 0.1, 0.9, 0.9]


def test_schedule_changes_the_mixture_per_stage():
    plan = MIX.language_plan(seed=0, total_steps=1000, batch_size=64, p=0.5, schedule="0.1_0.9", num_other=1)
    first, second = plan[: 500 * 64], plan[500 * 64 :]
    assert abs(first.mean() - 0.1) < 0.01
    assert abs(second.mean() - 0.9) < 0.01


def test_token_accounting_is_exact():
    plan = np.array([0, 1, 0, 0, 2, 1, 0])
    assert MIX.tokens_per_language(plan, 7, 3, seq_len=10) == [40, 20, 10]
    assert MIX.tokens_per_language(plan, 3, 3, seq_len=10) == [20, 10, 0]
    assert sum(MIX.tokens_per_language(plan, 5, 3, 4)) == 5 * 4


def test_the_mixture_view_answers_from_the_config_alone():
    from xling.config import from_dict
    from xling.data.mixture import Mixture

    imbalanced = Mixture.of(from_dict({"languages": {"p": 0.1}}))
    assert imbalanced.names == ("EN1", "EN2") and imbalanced.vocab == "clone"
    assert imbalanced.effective_p == 0.1 and imbalanced.expected_shares() == pytest.approx([0.9, 0.1])
    assert imbalanced.multilingual and not imbalanced.monolingual
    curriculum = Mixture.of(from_dict({"languages": {"p": 0.3, "schedule": "0.1_0.9"}}))
    assert curriculum.effective_p == pytest.approx(0.5) and curriculum.stages == (0.1, 0.9)  # p is unused
    ten = Mixture.of(from_dict({"languages": {"p": 0.9, "num_clones": 9}}))
    assert len(ten.names) == 10 and ten.expected_shares() == pytest.approx([0.1] * 10)
    ladder = Mixture.of(from_dict({"languages": {"p": 0.0}}))
    assert ladder.trained == ["EN1"] and ladder.monolingual
    second_only = Mixture.of(from_dict({"languages": {"kind": "real", "p": 1.0, "vocab": "anchored"}}))
    assert second_only.names == ("EN", "FR") and second_only.trained == ["FR"] and second_only.vocab == "anchored"
    hard_switch = Mixture.of(from_dict({"languages": {"schedule": "0.0_1.0"}}))
    assert hard_switch.trained == ["EN1", "EN2"]  # each stage trains one language, the run trains both


@pytest.mark.parametrize("case", ["clone-half", "disjoint-unequal", "anchored"])
def test_a_languages_text_ids_are_its_row_without_padding(case):
    """What `xling sample` lets a language write: every id its tokenizer can produce (anchors shared with the other
    language included), never padding, never the filler of a shorter vocabulary's row."""
    from types import SimpleNamespace

    from xling.data.stream import LanguageSetup

    pieces = [["<pad>", "<unk>", "<eod>", "▁the", "a", "s"], ["<pad>", "<unk>", "<eod>", "▁le"]]
    if case == "clone-half":
        table, vocab, sizes = L.clone_table(6, 1, frac_clone=0.5, seed=1, pad_id=0), 12, [6, 6]
    else:
        table, vocab = L.merge_tables(pieces, case.split("-")[0], [0, 0] if case == "anchored" else [None, None])
        sizes = [6, 4]
    toks = [SimpleNamespace(vocab_size=n, pad_id=0 if case != "disjoint-unequal" else None) for n in sizes]
    setup = LanguageSetup(["A", "B"], table, vocab, [0, 1], toks, [None, None])
    for lang in (0, 1):
        ids = set(setup.text_ids(lang).nonzero().flatten().tolist())
        row = table[lang][:sizes[lang]].tolist()
        pad = [row[0]] if toks[lang].pad_id is not None else []
        assert ids == set(row) - set(pad)
    if case == "disjoint-unequal":
        assert 0 not in setup.text_ids(1).nonzero().flatten().tolist()  # the filler id 0 is A's first piece
