#!/usr/bin/env bash
# One check of a GPU machine (README, Performance, "GPU"), in a few minutes:
#   1. `xling bench` of the paper's GPT-small (seq 512, V = 2 x 16,384, batch 64, bf16) with Hugging Face
#      GPT-2 on identical shapes in the same process;
#   2. the GPU tests (tests/test_gpu.py: fused loss, SDPA, bf16 / fp16 training, exact resume, compile);
#   3. a short headline-style study at GPU scale end to end (benchmarks/headline-gpu.yaml), and its report;
#   4. GPT-small again with `train.compile` (the blocks and the loss softmax), and the paper's mini (no Hugging
#      Face twin: its attention is narrower than the model);
#   5. with FULL=1, the whole test suite on the GPU machine (configs with `device: auto` train on the GPU).
# Usage: benchmarks/gpu.sh [OUT_DIR]   (default gpu-check/), with the CUDA build of torch installed (the Python
# is $PYTHON, else .venv/bin/python, else python3). It stops at once where torch sees no GPU. Each step has its
# own time limit and a failing step does not stop the next; every step's output goes to OUT_DIR/gpu.log, the
# bench results to JSON; the exit status is 1 if any step failed.
set -u
out=${1:-gpu-check}
mkdir -p "$out"
log="$out/gpu.log"
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1
summary=()
failed=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, keep its output, note how it ended
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*" | tee -a "$log"
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    [ "$rc" = 0 ] || failed=1
    summary+=("$name: exit $rc after $((SECONDS - start)) s")
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
}

if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>>"$log"; then
    echo "$py: torch sees no CUDA GPU here (install the CUDA build of torch, or set PYTHON): nothing checked" | tee -a "$log"
    exit 1
fi

work=$(mktemp -d)  # after the GPU check: nothing left behind where there is none
small=(--model.preset small --model.seq_len 512 --tokenizer.vocab_size 16384 --train.batch_size 64 --steps 10)

step environment 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    $py -c 'import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
step bench-small 150 "$py" -m xling bench "${small[@]}" --out "$out/bench-small.json"
step gpu-tests 150 "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py
step study 180 bash -c "$py -m xling study run benchmarks/headline-gpu.yaml --root $work/runs &&
    $py -m xling report benchmarks/headline-gpu.yaml --root $work/runs --out $work/report &&
    ls $work/report && cat $work/report/*.md"
step bench-small-compile 120 "$py" -m xling bench "${small[@]}" --train.compile true --no-hf \
    --out "$out/bench-small-compile.json"
step bench-mini 60 "$py" -m xling bench --model.preset mini --model.seq_len 512 --tokenizer.vocab_size 16384 \
    --train.batch_size 64 --steps 10 --out "$out/bench-mini.json"
if [ "${FULL:-0}" = 1 ]; then
    parallel=$("$py" -c 'import xdist' 2>/dev/null && echo "-n 8")  # pytest-xdist, where installed
    step full-suite 300 "$py" -m pytest -q -p no:cacheprovider $parallel tests
fi
rm -rf "$work"
printf '%s\n' "${summary[@]}" | tee -a "$log"
exit "$failed"
