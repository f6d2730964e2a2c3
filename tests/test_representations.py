"""The alignment measures beyond the paper's raw cosine, on cases with known answers."""

import pytest
import torch

from xling.analysis.representations import AlignedStates, linear_cka, retrieval_accuracy


def _languages(n=200, d=16, offset=8.0, seed=0):
    """The same content r in two languages, each with a large opposite offset (the language's identity)."""
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(n, d, generator=g)
    shift = torch.zeros(d)
    shift[0] = offset
    return content + shift, content - shift, shift


def test_centred_cosine_is_high_where_a_language_offset_makes_the_raw_cosine_negative():
    a, b, _ = _languages()
    raw = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    assert raw < -0.5  # the offsets dominate: translations look opposite
    held_a, held_b, _ = _languages(seed=1)  # the means come from other text than the scored one
    aligned = AlignedStates(held_a.mean(0)[None], held_b.mean(0)[None])
    for rows in torch.arange(200).split(50):  # sequences of 50 aligned tokens
        aligned.add(a[rows][None], b[rows][None])
    result = aligned.result()
    assert result["centred"]["layers"][0] > 0.9 and result["centred"]["mean"] > 0.9


def test_centred_shuffled_pairs_are_near_zero_for_unrelated_content_and_reported_beside():
    a, b, _ = _languages()
    held_a, held_b, _ = _languages(seed=1)
    aligned = AlignedStates(held_a.mean(0)[None], held_b.mean(0)[None])
    blocks = torch.arange(200).split(50)
    for i, rows in enumerate(blocks):
        aligned.add(a[rows][None], b[rows][None])
        other = blocks[(i + 1) % len(blocks)]  # the next sequence's other side: not a translation
        aligned.add_baseline(a[rows][None], b[other][None])
    centred = aligned.result()["centred"]
    assert centred["mean"] > 0.9 and abs(centred["shuffled_baseline"]["mean"]) < 0.15
    assert len(centred["shuffled_baseline"]["layers"]) == 1


def test_no_shuffled_pairs_no_baseline():
    a, b, _ = _languages(n=50)
    aligned = AlignedStates(a.mean(0)[None], b.mean(0)[None])
    aligned.add(a[None], b[None])
    assert "shuffled_baseline" not in aligned.result()["centred"]


def test_accumulated_cka_is_linear_cka_of_all_tokens():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 120, 12, generator=g)  # two layers
    y = x @ torch.randn(12, 12, generator=g) + 0.5 * torch.randn(2, 120, 12, generator=g)
    aligned = AlignedStates(torch.zeros(2, 12), torch.zeros(2, 12))
    for rows in torch.arange(120).split(40):
        aligned.add(x[:, rows], y[:, rows])
    assert aligned.cka() == pytest.approx([linear_cka(x[layer], y[layer]) for layer in range(2)], rel=1e-9)


def test_linear_cka_known_values():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 10, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0)  # rotation, scale, shift: identical
    assert linear_cka(x, torch.randn(300, 10, generator=g)) < 0.1  # unrelated
    # a direct computation from the definition: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = x x^T
    y = x[:, :4] + torch.randn(300, 4, generator=g)
    h = torch.eye(300, dtype=torch.float64) - 1 / 300
    k, l_ = h @ (x.double() @ x.double().T) @ h, h @ (y.double() @ y.double().T) @ h
    assert linear_cka(x, y) == pytest.approx(float((k * l_).sum() / (k.norm() * l_.norm())), rel=1e-9)


def test_retrieval_finds_translations_and_chance_without_them():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(50, 16, generator=g)
    assert retrieval_accuracy(a, a + 0.1 * torch.randn(50, 16, generator=g)) == 1.0
    assert retrieval_accuracy(a, torch.randn(50, 16, generator=g)) < 0.2  # chance is 1/50
    centred_a, centred_b, _ = _languages(n=50)
    aligned = AlignedStates(centred_a.mean(0)[None], centred_b.mean(0)[None])
    for i in range(50):  # one token per sequence: pooling is the identity
        aligned.add(centred_a[i:i + 1][None], centred_b[i:i + 1][None])
    retrieval = aligned.result()["retrieval"]
    assert retrieval["layers"] == [1.0] and retrieval["candidates"] == 50 and retrieval["chance"] == 1 / 50
