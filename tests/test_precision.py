"""Precision auto on a CPU: bf16 only where it is native and measured to pay, one answer a machine, and a run resumed
or loaded in the precision it trained in."""

import json
import logging

import pytest
import torch

from conftest import tiny_config
from xling.train import precision
from xling.train.rundir import RunDir
from xling.train.session import load_session
from xling.train.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """A CPU with native bf16 whose probe GEMM rates the test sets (rates["bf16"]); counts the probes run."""
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_MEASURED", {})
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(variable, raising=False)
    rates = {"fp32": 200.0, "bf16": 400.0, "probes": 0}

    def fake():
        rates["probes"] += 1
        return {"fp32": rates["fp32"], "bf16": rates["bf16"]}

    monkeypatch.setattr(precision, "_probe_rates", fake)
    return rates


def forget(monkeypatch):
    """A new process: nothing measured in memory (the cache file stays)."""
    monkeypatch.setattr(precision, "_MEASURED", {})


@pytest.mark.parametrize("bf16, expected", [(400.0, "bf16"), (260.0, "bf16"), (240.0, "fp32"), (100.0, "fp32")])
def test_auto_takes_bf16_on_a_cpu_only_where_its_gemms_are_measured_faster(probe, bf16, expected):
    """bf16 from 1.25x fp32's rate (an Intel Xeon without AMX multiplies bf16 at half its fp32 rate)."""
    probe["bf16"] = bf16
    assert precision.autocast_factory("auto", CPU)[1] == expected
    assert precision.autocast_factory("fp32", CPU)[1] == "fp32" and precision.autocast_factory("bf16", CPU)[1] == "bf16"
    assert expected in precision.auto_precision_reason(CPU) and f"{bf16:,.0f} GFLOP/s in bf16" in \
        precision.auto_precision_reason(CPU)


def test_a_cpu_without_native_bf16_is_not_probed(probe, monkeypatch):
    """An emulated bf16 GEMM takes minutes: no probe, fp32."""
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2"])
    assert precision.autocast_factory("auto", CPU)[1] == "fp32" and probe["probes"] == 0
    assert "not native here" in precision.auto_precision_reason(CPU)


def test_the_measurement_is_made_once_a_machine_and_kept_in_the_cache(probe, monkeypatch, tmp_path):
    assert precision.cpu_bf16_pays() and precision.cpu_bf16_pays() and probe["probes"] == 1
    forget(monkeypatch)
    probe["bf16"] = 100.0  # a later process on a busier day would measure otherwise: it reads the machine's answer
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    cache = tmp_path / "cache" / "cpu-precision.json"
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["bf16_pays"] is True and entry["fp32_gflops"] == 200.0 and entry["bf16_gflops"] == 400.0
    forget(monkeypatch)  # another machine (other flags) sharing the cache: its own measurement, the first one kept
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16", "amx_bf16"])
    assert not precision.cpu_bf16_pays() and probe["probes"] == 2
    assert sorted(e["bf16_pays"] for e in json.loads(cache.read_text()).values()) == [False, True]


@pytest.mark.parametrize("damage", ["not json", "[1, 2]", '{"KEY": {"bf16_pays": "yes", "fp32_gflops": 1.0}}',
                                    '{"KEY": {"bf16_pays": true, "fp32_gflops": 1, "bf16_gflops": 9.0}}',
                                    '{"KEY": {"bf16_pays": false, "fp32_gflops": 1.0, "bf16_gflops": 9.0}}'])
def test_a_damaged_cache_is_measured_again_and_rewritten(probe, monkeypatch, tmp_path, damage):
    key = precision.json_key(precision._machine())
    cache = tmp_path / "cache" / "cpu-precision.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(damage.replace("KEY", key))
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    assert json.loads(cache.read_text())[key]["bf16_pays"] is True


def test_an_unwritable_cache_still_answers(probe, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XLING_CACHE", str(blocker / "cache"))  # under a file: nothing can be created there
    assert precision.cpu_bf16_pays() and probe["probes"] == 1


def test_the_real_probe_leaves_the_global_random_state_alone():
    """A run's initial weights come from the global generator: measuring must not move it."""
    before = torch.get_rng_state()
    rates = precision._probe_rates()
    assert torch.equal(before, torch.get_rng_state())
    assert set(rates) == {"fp32", "bf16"} and all(r > 0 for r in rates.values())


def test_run_precision_keeps_what_the_run_trained_in_where_it_is_native(probe, monkeypatch):
    assert precision.run_precision("auto", "bf16", CPU) == "bf16"
    assert precision.run_precision("auto", "fp32", CPU) == "fp32"
    assert precision.run_precision("auto", None, CPU) == "auto"  # a run without run.json: auto decides
    assert precision.run_precision("auto", "int8", CPU) == "auto"  # (a crafted run.json)
    assert precision.run_precision("fp32", "bf16", CPU) == "fp32"  # asked for: as asked
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2"])
    assert precision.run_precision("auto", "bf16", CPU) == "auto"  # emulated here: auto's choice instead


def test_a_run_resumes_and_loads_in_the_precision_it_trained_in(tiny_corpus_dir, tmp_path, probe, monkeypatch, caplog):
    """Trained in bf16 where bf16 paid; resumed where auto now says fp32 (another machine, a cache removed): it goes on
    in bf16 and is evaluated in bf16; where bf16 is emulated it goes on in fp32 and says so."""
    cfg = tiny_config(tiny_corpus_dir, train={"precision": "auto", "device": "cpu", "steps": 8, "checkpoint_every": 2})
    out = tmp_path / "run"
    Trainer(cfg, out).fit(progress=False, stop_at=4)
    assert RunDir(out).trained_precision() == "bf16"
    forget(monkeypatch)
    probe["bf16"] = 100.0
    assert precision.autocast_factory("auto", CPU)[1] == "bf16"  # (cached: the machine's answer stands ...)
    (tmp_path / "cache" / "cpu-precision.json").unlink()
    forget(monkeypatch)
    assert precision.autocast_factory("auto", CPU)[1] == "fp32"  # (... until the cache is gone)
    caplog.set_level(logging.WARNING)
    trainer = Trainer(cfg, out)
    trainer.fit(resume=True, progress=False, stop_at=6)
    assert trainer.precision == "bf16" and RunDir(out).trained_precision() == "bf16"
    assert load_session(out, device="cpu").precision == "bf16"
    assert not [r for r in caplog.records if "goes on in" in r.getMessage()]
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2"])
    trainer = Trainer(cfg, out)
    trainer.fit(resume=True, progress=False)
    assert trainer.precision == "fp32" and RunDir(out).trained_precision() == "fp32"
    (line,) = [r.getMessage() for r in caplog.records if "goes on in" in r.getMessage()]
    assert "trained in bf16 and goes on in fp32 (not native here)" in line
