"""Property tests (hypothesis) over the language layer."""

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from xling.data import languages as L
from xling.data import mixture as MIX
from xling.notation import parse_schedule

small_vocab = st.integers(min_value=2, max_value=300)
clones = st.integers(min_value=1, max_value=6)
fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=60, deadline=None)
@given(V=small_vocab, k=clones, frac=fractions, seed=seeds)
def test_clone_ids_stay_in_range_and_the_map_is_invertible(V, k, frac, seed):
    table = L.clone_table(V, k, frac, seed)
    assert table.shape == (k + 1, V)
    assert int(table.min()) >= 0 and int(table.max()) < (k + 1) * V
    assert (table[:, 0] == 0).all()  # pad never shifts
    inverse = L.inverse_table(table, (k + 1) * V)
    for lang in range(k + 1):
        assert torch.equal(inverse[lang, table[lang]], torch.arange(V))  # each row is injective
        shifted = table[lang] != table[0]
        assert torch.equal(table[lang][shifted], torch.arange(V)[shifted] + lang * V)
    # a non-shared id belongs to exactly one language
    owners = (inverse >= 0).sum(0)
    shared = set(table[0][table[1] == table[0]].tolist())
    for model_id in range((k + 1) * V):
        assert owners[model_id] in ((k + 1) if model_id in shared else 1, 0)


@settings(max_examples=40, deadline=None)
@given(V=small_vocab, k=clones, seed=seeds, data=st.data())
def test_every_token_of_a_row_is_in_that_rows_language(V, k, seed, data):
    rows = data.draw(st.integers(1, 8))
    base = torch.randint(0, V, (rows, 16), generator=torch.Generator().manual_seed(seed))
    langs = torch.from_numpy(MIX.choose_languages(seed, np.arange(rows), 0.7, k))
    out = L.apply_languages(base, langs, L.clone_table(V, k))
    for row, lang, b in zip(out, langs, base):
        nonpad = b != 0
        assert ((row[nonpad] // V) == lang).all()
        assert torch.equal(row[nonpad] % V, b[nonpad])


@settings(max_examples=60, deadline=None)
@given(seed=seeds, k=clones, p=fractions, start=st.integers(0, 10**9), n=st.integers(1, 200))
def test_language_choice_depends_only_on_seed_and_row(seed, k, p, start, n):
    rows = np.arange(start, start + n)
    a = MIX.choose_languages(seed, rows, p, k)
    assert ((a >= 0) & (a <= k)).all()
    if p == 0:
        assert (a == 0).all()
    assert np.array_equal(a[n // 2:], MIX.choose_languages(seed, rows[n // 2:], p, k))


schedules = st.lists(fractions, min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(stages=schedules, total=st.integers(1, 500))
def test_schedule_stages_cover_the_run_in_order_and_equal_parts(stages, total):
    assume(total >= len(stages))
    text = "_".join(repr(s) for s in stages)
    assert parse_schedule(text) == stages
    stage = MIX.stage_of_step(np.arange(total), total, len(stages))
    assert stage[0] == 0 and stage[-1] == len(stages) - 1
    assert set(np.diff(stage).tolist()) <= {0, 1}  # stages come in order, none skipped
    counts = np.bincount(stage, minlength=len(stages))
    assert counts.max() - counts.min() <= 1  # equal stages up to rounding
    assert np.array_equal(MIX.p_per_step(0.5, text, total), np.asarray(stages)[stage])
