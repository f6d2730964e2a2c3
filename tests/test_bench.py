"""`xling bench` on a tiny shape: the fields are there and sane (speed itself is not tested)."""

import json
import os
import sys
import time

import pytest
import torch
import yaml

from conftest import tiny_config, tiny_config_dict
from xling.analysis.bench import matmul_flops_per_token, run_bench
from xling.cli import main
from xling.cli.tables import bench_table
from xling.model_dims import ModelDims


def test_matmul_flops_by_hand():
    dims = ModelDims(n_layers=2, d_model=8, n_heads=2, d_mlp=32, seq_len=3, vocab_size=10)
    per_layer = 2 * (4 * 64 + 2 * 8 * 32) + 2 * 2 * 8 * 2  # projections + MLP, attention over (3+1)/2 keys
    assert matmul_flops_per_token(dims) == 3 * (2 * per_layer + 2 * 8 * 10)


def test_the_matmul_floor_runs_exactly_the_matmuls_of_a_training_step():
    """`step_matmuls` (the bench's floor) does the FLOPs of the model's forward + backward: the
    MFU count, except that attention is done over full [T, T] squares, as xling's CPU path does."""
    from torch.utils.flop_counter import FlopCounterMode

    from xling.analysis.bench import step_matmuls
    from xling.model.gpt import GPT

    dims = ModelDims(n_layers=2, d_model=16, n_heads=2, d_mlp=48, seq_len=8, vocab_size=40)
    x = torch.randint(0, 40, (3, 8))
    with FlopCounterMode(display=False) as model_count:
        GPT(dims).loss(x, x).backward()
    with FlopCounterMode(display=False) as floor_count:
        step_matmuls(dims, x.numel(), torch.float32, torch.device("cpu"))(0)
    full_square_attention = 3 * dims.n_layers * 2 * 2 * dims.d_model * (dims.seq_len - (dims.seq_len + 1) / 2)
    assert floor_count.get_total_flops() == model_count.get_total_flops()
    assert floor_count.get_total_flops() == x.numel() * (matmul_flops_per_token(dims) + full_square_attention)


def test_step_exponentials_counts_one_per_logit_and_causal_score():
    """The bench's exponential floor counts what the model's softmaxes really take in, less the
    masked half of each attention square (xling's CPU path exponentiates it; it need not)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from xling.analysis.bench import step_exponentials
    from xling.model.gpt import GPT

    class Inputs(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._softmax.default, torch.ops.aten.softmax.int_out):  # (the loss's: in place)
                Inputs.count += args[0].numel()
            return func(*args, **(kwargs or {}))

    dims = ModelDims(n_layers=2, d_model=16, n_heads=2, d_mlp=48, seq_len=8, vocab_size=40)
    x = torch.randint(0, 40, (3, 8))
    with Inputs():
        GPT(dims).loss(x, x)
    masked = 3 * dims.n_heads * dims.n_layers * (8 * 8 - 8 * 9 // 2)
    assert Inputs.count == step_exponentials(dims, x.numel()) + masked
    assert step_exponentials(dims, x.numel()) == 24 * 40 + 3 * 2 * 36 * 2


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
    assert "pip install" in bench_table(result)


def test_bench_compares_with_hugging_face(tiny_corpus_dir):
    pytest.importorskip("transformers")
    result = run_bench(tiny_config(tiny_corpus_dir, train={"device": "cpu"}), steps=2, warmup=1, log=lambda _: None,
                       peak_size=256)  # the exponential floor is a CPU measure
    _check_run(result)
    assert set(result["hf"]) == {"fp32", "bf16"} and result["hf_best"] in ("fp32", "bf16")
    best = result["hf"][result["hf_best"]]["tokens_per_s"]
    assert result["ratio"] == pytest.approx(result["xling"]["tokens_per_s"] / best)
    x = result["xling"]
    assert 0 < x["matmuls_ms"] and x["matmul_share"] == pytest.approx(x["matmuls_ms"] / x["step_ms"])
    hf_step = result["hf"][result["hf_best"]]["step_ms"]
    assert result["ratio_ceiling"] == pytest.approx(hf_step / x["matmuls_ms"])
    assert x["exponentials"] > 0 and x["exponentials_ms"] > 0
    assert result["ratio_attainable"] == pytest.approx(hf_step / (x["matmuls_ms"] + x["exponentials_ms"]))
    assert "attainable with PyTorch's exp" in bench_table(result)
    assert "xling / HF" in bench_table(result)


def test_bench_cli_writes_json(tiny_corpus_dir, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir)), encoding="utf-8")
    out = tmp_path / "bench.json"
    assert main(["bench", str(config), "--steps", "2", "--warmup", "1", "--no-hf", "--out", str(out),
                 "--train.batch_size", "4"]) == 0
    result = json.loads(out.read_text())
    assert result["shape"]["batch"] == 4 and result["hf"] is None
    assert "tokens/s" in capsys.readouterr().out


def test_bench_says_when_its_threads_outnumber_the_cores(tiny_corpus_dir, tmp_path, capsys, monkeypatch):
    from xling.study import launch

    monkeypatch.setattr(launch, "usable_cores", lambda: 1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir)), encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        assert main(["bench", str(config), "--steps", "1", "--warmup", "0", "--no-hf", "--threads", "2",
                     "--train.batch_size", "4"]) == 0
    finally:
        torch.set_num_threads(threads)  # (the other tests run on one)
    out = capsys.readouterr()
    assert "note: 2 threads on 1 usable core: they share the cores" in out.err and ", 2 threads;" in out.out


# --------------------------------------------------------------------------- CPU defaults


@pytest.mark.parametrize("busy,load,expected", [(0.1, 1.9, ("GOMP_SPINCOUNT", "3000")),  # a job that just ended
                                               (0.9, 0.1, ("OMP_WAIT_POLICY", "PASSIVE")),
                                               (None, 0.1, ("GOMP_SPINCOUNT", "3000")),  # no /proc/stat
                                               (None, 1.5, ("OMP_WAIT_POLICY", "PASSIVE"))])
def test_openmp_threads_spin_briefly_only_on_a_machine_idle_now(monkeypatch, busy, load, expected):
    from xling.train import threads as cli

    monkeypatch.setattr(cli.os, "environ", {})  # a scratch environment: nothing leaks into other tests
    monkeypatch.setattr(cli, "busy_cores", lambda: busy)
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (load, load, load))
    cli.openmp_wait_setup()
    key, value = expected
    assert cli.os.environ[key] == value
    assert len(cli.os.environ) == 1


def test_busy_cores_sees_another_process_keep_a_core_busy():
    import subprocess

    from xling.train.threads import busy_cores

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat here")
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        assert busy_cores(0.5) >= 0.6  # the spinner's core, whatever else runs
    finally:
        spinner.kill()
        spinner.wait()


def test_openmp_settings_from_the_environment_win(monkeypatch):
    from xling.train import threads as cli

    monkeypatch.setattr(cli.os, "environ", {"OMP_WAIT_POLICY": "ACTIVE"})
    cli.openmp_wait_setup()
    assert cli.os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in cli.os.environ


def test_bench_times_only_the_precisions_the_cpu_runs_natively(tiny_corpus_dir, monkeypatch):
    """On a CPU without native bf16 the bench neither times bf16 GEMMs nor Hugging Face in bf16
    (emulated, they stalled it for minutes) and says why."""
    pytest.importorskip("transformers")
    from xling.analysis import bench
    from xling.train import precision as session

    monkeypatch.setattr(session, "_cpu_flags", lambda: ["avx2"])  # the trainer's 'auto' precision and the bench's choice
    result = run_bench(tiny_config(tiny_corpus_dir, train={"precision": "auto", "device": "cpu"}), steps=1, warmup=0,
                       log=lambda _: None, peak_size=64)
    assert set(result["peaks"]) == {"fp32"} and set(result["hf"]) == {"fp32"}
    assert "emulated" in result["skipped_precisions"]["bf16"] and "bf16 not timed" in bench_table(result)
    assert "precision auto here: fp32: bf16 is not native here" in bench_table(result)
    assert result["precision_auto"]["precision"] == "fp32" == result["xling"]["precision"]
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(variable, raising=False)
    assert "no AVX512-BF16 or AMX" in bench.native_precisions(torch.device("cpu"))[1]["bf16"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # the cap, not the CPU, is why: say so
    assert "the oneDNN ISA cap AVX2 turns native bf16 off" in bench.native_precisions(torch.device("cpu"))[1]["bf16"]
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(session, "_cpu_flags", lambda: None)  # e.g. ARM: bf16 not timed, as not known to be native
    assert "cannot read this CPU's" in bench.native_precisions(torch.device("cpu"))[1]["bf16"]


@pytest.mark.parametrize("precision,why", [("bf16", "turns native bf16 off"), ("fp16", "turns native fp16 off")])
def test_bench_refuses_a_precision_the_cpu_emulates(tiny_corpus_dir, tmp_path, monkeypatch, capsys, precision, why):
    """Asked for an emulated precision, the bench says so in one line (it used to stall for minutes)."""
    from xling.train import precision as session

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(session, "_cpu_flags", lambda: ["avx2"])  # fp16 too, on any CPU running the test
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tiny_corpus_dir)), encoding="utf-8")
    out = tmp_path / "bench.json"
    assert main(["bench", str(config), "--no-hf", "--train.precision", precision, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0] and "use --train.precision auto or fp32" in err[0]
    assert not out.exists()


def test_training_and_evaluating_in_a_precision_the_cpu_emulates_warns(tiny_corpus_dir, tmp_path, monkeypatch, caplog):
    from xling.train import precision as session
    from xling.train.session import load_session
    from xling.train.trainer import Trainer

    monkeypatch.setattr(session, "_cpu_flags", lambda: ["avx2"])
    for precision, warned in [("fp16", True), ("bf16", True), ("fp32", False), ("auto", False)]:
        caplog.clear()
        cfg = tiny_config(tiny_corpus_dir, train={"precision": precision, "device": "cpu", "steps": 2})
        Trainer(cfg, tmp_path / precision).fit(progress=False)
        load_session(tmp_path / precision, device="cpu")  # evaluation, sampling, alignment load it so
        lines = [r.getMessage() for r in caplog.records if "emulated on this CPU" in r.getMessage()]
        assert len(lines) == (2 if warned else 0), precision
        assert all("many times slower than precision auto (fp32 here) or fp32" in line for line in lines)


def test_a_onednn_isa_cap_turns_native_fp16_off_too(monkeypatch):
    from xling.train import precision as session

    monkeypatch.setattr(session, "_cpu_flags", lambda: ["avx512_fp16", "avx512_bf16"])
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert session.cpu_emulates("fp16") == "" and session.cpu_emulates("bf16") == ""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")  # bf16 still native, fp16 not
    assert session.cpu_emulates("bf16") == "" and "cap AVX512_CORE_BF16" in session.cpu_emulates("fp16")
    assert session.cpu_emulates("fp32") == ""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(session, "_cpu_flags", lambda: None)  # flags unknown (ARM, macOS): neither refused nor warned
    assert session.cpu_emulates("fp16") == "" and session.cpu_emulates("bf16") == "" and not session.cpu_has_bf16()


def test_a_onednn_isa_cap_below_bf16_means_no_native_bf16(monkeypatch):
    from xling.train import precision as session

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    uncapped = session.cpu_has_bf16()
    for cap, expected in [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", uncapped), ("ALL", uncapped)]:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert session.cpu_has_bf16() == expected, cap


def _benchmark_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("status", [0, 3])
def test_demo_against_reads_a_demos_runs_time_results_and_failure(tmp_path, status):
    demo_against = _benchmark_script("demo_against")
    package = tmp_path / "src" / "xling"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli" / "__init__.py").write_text(  # a stand-in for some commit's `xling demo`
        "import os, sys\n"
        "def main():\n"
        "    assert sys.argv[1:] == ['demo'] and os.listdir('.') == []  # an empty directory of its own\n"
        "    assert os.environ['XLING_RUNS'] == os.path.join(os.getcwd(), 'runs')  # and its own runs root\n"
        "    print('study headline-cpu: 2 runs')\n"
        "    print('[1/2] a-1 in 3 s (4 s elapsed)')\n"
        "    print('[2/2] b-2 in 5 s (9 s elapsed)')\n"
        "    print('Test perplexity per language (geometric mean):')\n"
        "    print('  claim 1: supported')\n"
        "    print('a note', file=sys.stderr)\n"
        "    print('the last line', file=sys.stderr)\n"
        f"    return {status}\n")
    assert demo_against.imported_from(tmp_path / "src") == (package / "__init__.py").resolve()
    demo = demo_against.run_demo(tmp_path / "src", tmp_path / "root")
    assert demo["status"] == status and demo["runs_seconds"] == 9.0 and demo["last_line"] == "the last line"
    assert demo["results"] == "Test perplexity per language (geometric mean):\n  claim 1: supported\n"
    assert demo["seconds"] > 0 and demo["other_cores"] >= 0


def test_demo_against_prints_each_pairs_ratio_and_whether_the_results_repeat(capsys):
    demo_against = _benchmark_script("demo_against")
    demo = lambda seconds, runs, results="r": {"seconds": seconds, "runs_seconds": runs, "results": results}
    demo_against._print_pairs([{"other": demo(250.0, 240.0), "this": demo(200.0, 190.0)},
                               {"other": demo(230.0, 220.0), "this": demo(200.0, 192.0)}], "af04a4b")
    out = capsys.readouterr().out.splitlines()
    assert "1.25x" in out[1] and "240.0 / 10.0 s" in out[1] and "190.0 / 10.0 s" in out[1] and "1.15x" in out[2]
    assert out[3] == ("median speed-up (af04a4b's time / this code's) 1.20x over 2 pair(s) (range 1.15-1.25x); this "
                      "code's result lines: the same in all 2 demos")
    busy = dict(demo(230.0, 220.0), other_cores=0.9)  # another job ran beside it
    demo_against._print_pairs([{"other": demo(250.0, 240.0), "this": demo(200.0, 190.0)},
                               {"other": busy, "this": demo(200.0, 192.0, "other numbers")}], "af04a4b")
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith("result lines: DIFFERENT between its demos")
    assert [line.strip() for line in out if "warning" in line] == [
        "warning: other processes kept 0.90 cores busy during the af04a4b demo of pair 2: this pair compares the "
        "machine's load, not the code"]
