"""`xling bench` on a tiny shape: the fields are there and sane (speed itself is not tested)."""

import json
import sys

import pytest
import yaml

from conftest import tiny_config, tiny_config_dict
from xling.bench import format_table, matmul_flops_per_token, run_bench
from xling.cli import main
from xling.model import ModelDims


def test_matmul_flops_by_hand():
    dims = ModelDims(n_layers=2, d_model=8, n_heads=2, d_mlp=32, seq_len=3, vocab_size=10)
    per_layer = 2 * (4 * 64 + 2 * 8 * 32) + 2 * 2 * 8 * 2  # projections + MLP, attention over (3+1)/2 keys
    assert matmul_flops_per_token(dims) == 3 * (2 * per_layer + 2 * 8 * 10)


def _check_run(result: dict) -> None:
    x = result["xling"]
    assert x["tokens_per_s"] > 0 and x["step_ms"] > 0
    assert 0 < x["data_ms"] < x["step_ms"] and 0 < x["data_share"] < 1
    assert 0 < x["mfu"] < 1.5  # a tiny model is far from peak; 1.5 leaves room for a noisy peak
    assert result["peaks"]["fp32"]["flops"] > 0
    assert result["shape"]["vocab"] == 640 and result["shape"]["d_model"] == 32


def test_bench_without_transformers_still_reports_xling(tiny_corpus_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    result = run_bench(tiny_config(tiny_corpus_dir), steps=2, warmup=1, log=lambda _: None, peak_size=256)
    _check_run(result)
    assert "pip install" in result["hf"]["error"] and result["ratio"] is None
    assert "pip install" in format_table(result)


def test_bench_compares_with_hugging_face(tiny_corpus_dir):
    pytest.importorskip("transformers")
    result = run_bench(tiny_config(tiny_corpus_dir), steps=2, warmup=1, log=lambda _: None, peak_size=256)
    _check_run(result)
    assert set(result["hf"]) == {"fp32", "bf16"} and result["hf_best"] in ("fp32", "bf16")
    best = result["hf"][result["hf_best"]]["tokens_per_s"]
    assert result["ratio"] == pytest.approx(result["xling"]["tokens_per_s"] / best)
    assert "xling / HF" in format_table(result)


def test_bench_cli_writes_json(tiny_corpus_dir, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir)), encoding="utf-8")
    out = tmp_path / "bench.json"
    assert main(["bench", str(config), "--steps", "2", "--warmup", "1", "--no-hf", "--out", str(out),
                 "--train.batch_size", "4"]) == 0
    result = json.loads(out.read_text())
    assert result["shape"]["batch"] == 4 and result["hf"] is None
    assert "tokens/s" in capsys.readouterr().out
