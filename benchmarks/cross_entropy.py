"""The output head's loss: xling's chunked cross-entropy vs the plain materialising path.

Times forward + backward of `xling.model.loss.linear_cross_entropy(h, weight, targets)` (logits
computed chunk by chunk, softmax in cache-sized fp32 slices, gradients folded in during the
forward pass) for a few chunk sizes, against `F.cross_entropy(F.linear(h, weight).float(),
targets)`, which holds the whole [rows, vocab] logits and their gradient, under bf16 autocast
(the CPU training default) on h [rows, width] and weight [vocab, width]. Prints milliseconds
(best and median of the repeats) and the peak memory each path adds (Linux, max RSS growth
measured in a fresh subprocess per contender).

    python benchmarks/cross_entropy.py                              # width 256, vocab 8,192 and 65,536
    python benchmarks/cross_entropy.py --width 512 --vocab 16384 --rows 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import xling.model.loss as model
from xling.train.session import cpu_allocator_setup


def _loss(path: str):
    if path == "plain":
        return lambda h, w, t: F.cross_entropy(F.linear(h, w).float(), t)
    return model.linear_cross_entropy


def measure(path: str, rows: int, width: int, vocab: int, chunk_elements: int, repeats: int) -> dict:
    """Milliseconds of forward + backward and the growth of the process's peak memory."""
    cpu_allocator_setup()
    if chunk_elements:  # an explicit chunk size, exactly (0: xling's defaults)
        model.CE_CHUNK_ELEMENTS, model.CE_MIN_ROWS = chunk_elements, 1
    torch.manual_seed(0)
    h = torch.randn(rows, width, requires_grad=True)
    w = (0.02 * torch.randn(vocab, width)).requires_grad_()
    t = torch.randint(0, vocab, (rows,))
    loss_fn = _loss(path)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(h, w, t)
        loss.backward()
        h.grad = w.grad = None
        if i >= 2:  # two warm-up calls
            times.append(time.perf_counter() - start)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"best_ms": 1000 * min(times), "median_ms": 1000 * statistics.median(times), "peak_growth_mb": grown_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="tokens per micro-batch (default 32 x 128)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, nargs="+", default=[8192, 65536])
    parser.add_argument("--chunks", type=int, nargs="+", default=[1 << 22],
                        help="explicit logits per chunk to compare with xling's defaults (default: 4M, the old default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(**json.loads(args.one), repeats=args.repeats)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, rows {args.rows}, width {args.width}, bf16 autocast")
    for vocab in args.vocab:
        contenders = [("plain", 0), ("chunked", 0)] + [("chunked", c) for c in args.chunks]
        for path, chunk in contenders:
            spec = {"path": path, "rows": args.rows, "width": args.width, "vocab": vocab, "chunk_elements": chunk}
            out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec), "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out)
            rows = max(1, chunk // vocab) if chunk else model._chunks(args.rows, vocab, torch.device("cpu"))[0][1]
            label = ("plain F.cross_entropy" if path == "plain" else
                     f"chunked, {'default' if not chunk else 'explicit'}: {rows} rows a chunk")
            print(f"vocab {vocab:>6,}  {label:<40} {r['best_ms']:8.1f} / {r['median_ms']:8.1f} ms"
                  f"   peak memory +{r['peak_growth_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
