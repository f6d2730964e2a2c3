"""Precision auto on a CPU: bf16 only where it is native and measured to pay, one answer a machine, and a run resumed
or loaded in the precision it trained in."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_config
from xling.analysis import transfer
from xling.train import precision
from xling.train.evaluate import evaluate_run
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
    reason = precision.auto_precision_reason(CPU)
    assert reason.startswith(f"{expected}: ") and f"{bf16:,.0f} GFLOP/s in bf16 against 200 in fp32" in reason


def test_a_cpu_without_native_bf16_is_not_probed(probe, monkeypatch):
    """An emulated bf16 GEMM takes minutes: no probe, fp32."""
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2"])
    assert precision.autocast_factory("auto", CPU)[1] == "fp32" and probe["probes"] == 0
    assert precision.auto_precision_reason(CPU).startswith("fp32: bf16 is not native here")


def test_the_measurement_is_made_once_a_machine_and_kept_in_the_cache(probe, monkeypatch, tmp_path):
    assert precision.cpu_bf16_pays() and precision.cpu_bf16_pays() and probe["probes"] == 1
    forget(monkeypatch)
    probe["bf16"] = 100.0  # a later process on a busier day would measure otherwise: it reads the machine's answer
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    cache = tmp_path / "cache" / "cpu-precision.json"
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["fp32_gflops"] == 200.0 and entry["bf16_gflops"] == 400.0 and entry["measured"]
    forget(monkeypatch)  # another machine (other flags) sharing the cache: its own measurement, the first one kept
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16", "amx_bf16"])
    assert not precision.cpu_bf16_pays() and probe["probes"] == 2
    assert sorted(e["bf16_gflops"] for e in json.loads(cache.read_text()).values()) == [100.0, 400.0]
    forget(monkeypatch)  # a cache of its own (Trainer's and load_session's cache_dir): measured there
    assert not precision.cpu_bf16_pays(tmp_path / "own") and (tmp_path / "own" / "cpu-precision.json").is_file()


def test_the_threshold_is_applied_when_the_measurement_is_read(probe, monkeypatch):
    """A later xling with another threshold judges the kept rates anew (the verdict is not stored)."""
    probe["bf16"] = 300.0
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    forget(monkeypatch)
    monkeypatch.setattr(precision, "BF16_MIN_SPEEDUP", 2.0)
    assert not precision.cpu_bf16_pays() and probe["probes"] == 1


@pytest.mark.parametrize("damage", ["not json", "[1, 2]", '{"KEY": {"measured": "x", "fp32_gflops": 1.0}}',
                                    '{"KEY": {"measured": "x", "fp32_gflops": 1, "bf16_gflops": 9.0}}',
                                    '{"KEY": {"fp32_gflops": 1.0, "bf16_gflops": 9.0}}',
                                    '{"KEY": {"measured": "x", "fp32_gflops": 0.0, "bf16_gflops": 9.0}}',
                                    '{"KEY": {"measured": "x", "fp32_gflops": 1.0, "bf16_gflops": 1e999}}'])
def test_a_damaged_cache_is_measured_again_and_rewritten(probe, tmp_path, damage):
    key = precision._machine_key()
    cache = tmp_path / "cache" / "cpu-precision.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(damage.replace("KEY", key))
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    assert json.loads(cache.read_text())[key]["bf16_gflops"] == 400.0


def test_an_unwritable_cache_still_answers_and_says_nothing_was_kept(probe, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XLING_CACHE", str(blocker / "cache"))  # under a file: nothing can be created there
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    assert precision.auto_precision_reason(CPU).endswith("not kept: the cache takes no files)")
    forget(monkeypatch)  # the lock taken but the file not written (a full disk): measured once, not kept
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "full"))

    def full(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(precision, "atomic_write_json", full)
    assert precision.cpu_bf16_measurement()["cache"] == "" and probe["probes"] == 2


def test_a_cache_that_takes_no_lock_file_is_still_read(probe, monkeypatch, tmp_path):
    """A read-only cache (a shared one, say) answers from its measurement; without one, this process measures."""
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    forget(monkeypatch)

    def refused(path):
        raise PermissionError(13, "Permission denied", f"{path}.lock")

    monkeypatch.setattr(precision, "_locked", refused)
    probe["bf16"] = 100.0
    assert precision.cpu_bf16_pays() and probe["probes"] == 1
    forget(monkeypatch)
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "empty"))
    assert not precision.cpu_bf16_pays() and probe["probes"] == 2


def test_a_measurement_written_meanwhile_wins_over_ones_own(probe, monkeypatch, tmp_path):
    """Where the file system has no locks, processes starting together each measure: the first written wins."""
    cache = tmp_path / "cache" / "cpu-precision.json"
    other = {"fp32_gflops": 200.0, "bf16_gflops": 100.0, "measured": "earlier"}

    def another_process_writes_first():
        cache.write_text(json.dumps({precision._machine_key(): other}))
        return {"fp32": 200.0, "bf16": 400.0}

    monkeypatch.setattr(precision, "_probe_rates", another_process_writes_first)
    assert not precision.cpu_bf16_pays()
    assert json.loads(cache.read_text()) == {precision._machine_key(): other}


_WORKER = """
import os, sys, time
from xling.train import precision
def probe():
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(0.5)
    return {"fp32": 100.0, "bf16": float(os.getpid())}
precision._probe_rates = probe
print(precision.cpu_bf16_measurement()["bf16_gflops"])
"""


def test_processes_starting_together_measure_once_and_agree(tmp_path):
    """A study's workers start at once: one measures under the lock, the others wait and read its answer."""
    env = {**os.environ, "XLING_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / "probes")], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(3)]
    answers = {w.communicate(timeout=120)[0].strip() for w in workers}
    assert len((tmp_path / "probes").read_text().split()) == 1 and len(answers) == 1


def test_run_precision_keeps_what_the_run_trained_in_where_it_is_native(probe, monkeypatch):
    assert precision.run_precision("auto", "bf16", CPU) == "bf16"
    assert precision.run_precision("auto", "fp32", CPU) == "fp32"
    assert precision.run_precision("auto", None, CPU) == "auto"  # a run without run.json: auto decides
    assert precision.run_precision("auto", "int8", CPU) == "auto"  # (a crafted run.json)
    assert precision.run_precision("fp32", "bf16", CPU) == "fp32"  # asked for: as asked
    assert precision.run_precision("auto", "fp16", CPU) == "auto"  # (these flags: no AVX512-FP16)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2"])
    assert precision.run_precision("auto", "bf16", CPU) == "auto"  # emulated here: auto's choice instead
    monkeypatch.setattr(precision, "_cpu_flags", lambda: None)  # ARM, macOS: not known to be native
    assert [precision.run_precision("auto", p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "auto", "auto"]


@pytest.mark.parametrize("native_bf16", [True, False])
def test_on_a_gpu_bf16_counts_only_where_it_is_not_emulated(monkeypatch, native_bf16):
    """torch's is_bf16_supported() says yes on a V100 or T4, which emulate bf16: auto takes fp16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or native_bf16)
    gpu = torch.device("cuda")
    assert precision.auto_precision(gpu) == ("bf16" if native_bf16 else "fp16")
    assert precision.run_precision("auto", "bf16", gpu) == ("bf16" if native_bf16 else "auto")
    assert precision.run_precision("auto", "fp16", gpu) == "fp16" and precision.runs_natively("fp32", gpu)
    assert precision.auto_precision_reason(gpu) == ("bf16: this GPU multiplies bf16 natively" if native_bf16
                                                    else "fp16: this GPU has no native bf16")


def test_the_real_probe_leaves_the_global_random_state_alone():
    """A run's initial weights come from the global generator: measuring must not move it."""
    before = torch.get_rng_state()
    rates = precision._probe_rates()
    assert torch.equal(before, torch.get_rng_state())
    assert set(rates) == {"fp32", "bf16"} and all(r > 0 for r in rates.values())


def test_a_run_resumes_and_loads_in_the_precision_it_trained_in(tiny_corpus_dir, tmp_path, probe, monkeypatch, caplog):
    """Trained in bf16 where bf16 paid; resumed where auto now says fp32 (another machine, a cache removed): it goes on
    in bf16, is evaluated and fine-tuned in bf16; where bf16 is emulated it goes on in fp32 and says so."""
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
    used, real = [], transfer.finetune  # the transfer fine-tunes as the run trained
    monkeypatch.setattr(transfer, "finetune", lambda *a, **k: used.append(a[4]().fast_dtype) or real(*a, **k))
    transfer.transfer_run(out, "bible-parts", steps=1, batch_size=2)
    assert used == [torch.bfloat16]
    monkeypatch.setattr(precision, "_cpu_flags", lambda: ["avx2"])
    trainer = Trainer(cfg, out)
    trainer.fit(resume=True, progress=False)
    assert trainer.precision == "fp32" and RunDir(out).trained_precision() == "fp32"
    (line,) = [r.getMessage() for r in caplog.records if "goes on in" in r.getMessage()]
    assert "trained in bf16, which this device does not multiply natively, and goes on in fp32" in line
    assert RunDir(out).trained_precisions() == ["bf16", "fp32"]  # (a study's report names both)
    assert evaluate_run(out, device="cpu")[0]["precision"] == "fp32"


def test_bf16_asked_for_where_it_is_slower_than_fp32_trains_and_says_so(tiny_corpus_dir, tmp_path, probe, caplog):
    probe["bf16"] = 100.0
    caplog.set_level(logging.WARNING)
    for asked in ("bf16", "auto"):
        cfg = tiny_config(tiny_corpus_dir, train={"precision": asked, "device": "cpu", "steps": 4, "checkpoint_every": 2})
        trainer = Trainer(cfg, tmp_path / asked)
        trainer.fit(progress=False, stop_at=2)
        assert trainer.precision == {"bf16": "bf16", "auto": "fp32"}[asked]
        Trainer(cfg, tmp_path / asked).fit(resume=True, progress=False)  # (said when it started, not again)
    (line,) = [r.getMessage() for r in caplog.records if "slower" in r.getMessage()]
    assert "train.precision bf16 is slower than fp32 on this CPU (a 2048x512x512 GEMM: 100 GFLOP/s in bf16 against " \
           "200 in fp32): precision auto takes fp32 here" in line
    assert RunDir(tmp_path / "bf16").trained_precisions() == ["bf16"]


def test_a_run_that_switches_into_fp16_on_resume_starts_a_fresh_loss_scaler(tiny_corpus_dir, tmp_path, probe,
                                                                           monkeypatch):
    """A bf16 run resumed on a GPU without native bf16 (a V100) goes on in fp16: its checkpoint has no scaler state."""
    cfg = tiny_config(tiny_corpus_dir, train={"precision": "auto", "device": "cpu", "steps": 6, "checkpoint_every": 2})
    out = tmp_path / "run"
    Trainer(cfg, out).fit(progress=False, stop_at=4)
    monkeypatch.setattr(precision, "runs_natively", lambda p, device: p != "bf16")
    monkeypatch.setattr(precision, "auto_precision", lambda device, cache_dir=None: "fp16")
    trainer = Trainer(cfg, out)
    trainer.fit(resume=True, progress=False)
    assert trainer.precision == "fp16" and trainer.scaler.is_enabled()
    assert RunDir(out).trained_precisions() == ["bf16", "fp16"]


def test_under_torchrun_every_process_takes_the_first_ones_precision(tiny_corpus_dir, tmp_path, probe, monkeypatch):
    from xling.train import distributed

    decided = []
    monkeypatch.setattr(distributed, "from_main", lambda world, value, device: decided.append(value) or "fp32")
    trainer = Trainer(tiny_config(tiny_corpus_dir, train={"precision": "auto", "device": "cpu", "steps": 2}),
                      tmp_path / "run")
    trainer.prepare(resume=False)
    assert decided == ["bf16"] and trainer.precision == "fp32"  # (this process measured bf16; the first said fp32)


def test_the_precisions_a_run_trained_in_from_its_run_json(tmp_path):
    run = RunDir(tmp_path)
    for info, expected in [({}, []), ({"precision": "int8"}, []), ({"precision": "fp32"}, ["fp32"]),
                           ({"precision": "fp32", "precisions": ["bf16", "fp32"]}, ["bf16", "fp32"]),
                           ({"precision": "fp32", "precisions": ["bf16", "bf16", "fp32", "fp32"]}, ["bf16", "fp32"]),
                           ({"precision": "bf16", "precisions": ["bf16", "fp32"]}, ["bf16"]),  # (hand-edited)
                           ({"precision": "fp32", "precisions": "bf16"}, ["fp32"]),
                           ({"precisions": ["bf16"]}, [])]:  # (no latest: nothing to resume in, auto decides)
        (tmp_path / "run.json").write_text(json.dumps(info))
        assert run.trained_precisions() == expected, info
        assert run.trained_precision() == (expected[-1] if expected else None)


def test_a_run_that_recorded_no_precision_resumes_in_what_auto_takes(tiny_corpus_dir, tmp_path, probe, monkeypatch,
                                                                    caplog):
    cfg = tiny_config(tiny_corpus_dir, train={"precision": "auto", "device": "cpu", "steps": 6, "checkpoint_every": 2})
    out = tmp_path / "run"
    Trainer(cfg, out).fit(progress=False, stop_at=4)
    info = json.loads((out / "run.json").read_text())
    del info["precision"]  # (a run.json without it: an older or hand-made one)
    (out / "run.json").write_text(json.dumps(info))
    probe["bf16"] = 100.0
    (tmp_path / "cache" / "cpu-precision.json").unlink()
    forget(monkeypatch)
    trainer = Trainer(cfg, out)
    trainer.fit(resume=True, progress=False)
    assert trainer.precision == "fp32" and not [r for r in caplog.records if "goes on in" in r.getMessage()]


def test_the_emulation_warning_measures_into_the_callers_cache(tiny_corpus_dir, tmp_path, probe, caplog):
    cfg = tiny_config(tiny_corpus_dir, train={"precision": "fp16", "device": "cpu", "steps": 1})
    Trainer(cfg, tmp_path / "run", cache_dir=tmp_path / "own").prepare(resume=False)
    assert any("fp16 is emulated on this CPU" in r.getMessage() and "precision auto (bf16 here)" in r.getMessage()
               for r in caplog.records)
    assert (tmp_path / "own" / "cpu-precision.json").is_file() and not (tmp_path / "cache" / "cpu-precision.json").exists()
