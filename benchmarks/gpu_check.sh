#!/usr/bin/env bash
# GPU check: the speed figures of the series on a CUDA GPU, in a few minutes.
#
#   bash benchmarks/gpu_check.sh            # from anywhere; PYTHON=... picks the interpreter
#
# 1. prints the device (and stops here, exit status 2, with a clear message, where no CUDA GPU
#    is visible: nothing else runs and nothing is written);
# 2. runs bench_pipeline.py, bench_cockpit.py and bench_training.py on CUDA (bench_cockpit.py
#    on the CPU where it has no --device option, said so);
# 3. times the handover, the reference fix and one tuned run at the full budget on the offline
#    stand-in data (time_full_budget.py: 2 of 10 epochs measured, the whole run projected).
#
# Every step has a time limit (GPU_CHECK_STEP_S, default 240 s) and all of them together one
# more (GPU_CHECK_LIMIT_S, default 540 s): a step that hangs is stopped and reported, the
# check goes on with the next one. Results go to GPU_CHECK_OUT (default
# benchmarks/results/gpu/). Exit status: 0 all steps passed, 1 a step failed, 2 no GPU.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-python}"
OUT="${GPU_CHECK_OUT:-benchmarks/results/gpu}"
LIMIT_S="${GPU_CHECK_LIMIT_S:-540}"
STEP_S="${GPU_CHECK_STEP_S:-240}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()

step() {  # step NAME COMMAND...: run COMMAND under the time left, report how it ended
    local name=$1 left=$((LIMIT_S - SECONDS)) limit rc
    shift
    limit=$((left < STEP_S ? left : STEP_S))
    if ((limit < 10)); then
        echo "gpu_check: no time left for $name (GPU_CHECK_LIMIT_S=$LIMIT_S)" >&2
        failed+=("$name (not run: no time left)")
        return 1
    fi
    echo "== $name (at most $limit s)"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "gpu_check: $name did not finish within $limit s and was stopped" >&2
        failed+=("$name (stopped after $limit s)")
    elif ((rc != 0)); then
        echo "gpu_check: $name failed (exit status $rc)" >&2
        failed+=("$name (exit status $rc)")
    fi
    return "$rc"
}

echo "== device check"
timeout --kill-after=10 120 "$PY" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    why = (
        "this torch build has no CUDA support"
        if torch.version.cuda is None
        else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU"
    )
    print(
        f"gpu_check: no CUDA GPU here: {why} (torch.cuda.is_available() is False). Nothing "
        "was measured. Run this on a machine with an NVIDIA GPU (in Colab: Runtime > Change "
        "runtime type > GPU).",
        file=sys.stderr,
    )
    sys.exit(2)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(
        f"cuda:{i} {p.name}, compute capability {p.major}.{p.minor}, "
        f"{p.total_memory / 2**30:.1f} GiB, bfloat16 {torch.cuda.is_bf16_supported()}"
    )
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
EOF
rc=$?
if ((rc != 0)); then
    ((rc == 2)) && exit 2
    echo "gpu_check: the device check did not pass (exit status $rc; 124: it hung for 120 s);" \
        "nothing was measured." >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi -L

mkdir -p "$OUT"
step "bench_pipeline.py" "$PY" benchmarks/bench_pipeline.py --device cuda --rounds 3 \
    --out "$OUT/pipeline.json"
cockpit_args=(--out "$OUT/cockpit.json" --presets basic,cheap,standard)
if "$PY" benchmarks/bench_cockpit.py --help 2>/dev/null | grep -q -- "--device"; then
    cockpit_args+=(--device cuda)
else
    echo "gpu_check: bench_cockpit.py has no --device option: it measures on the CPU"
fi
step "bench_cockpit.py" "$PY" benchmarks/bench_cockpit.py "${cockpit_args[@]}"
step "bench_training.py" "$PY" benchmarks/bench_training.py --device cuda --out "$OUT/training.json"
step "time_full_budget.py" "$PY" benchmarks/time_full_budget.py --device cuda \
    --out "$OUT/full_budget.json"

echo "== gpu_check done in $SECONDS s; results in $OUT"
if ((${#failed[@]})); then
    printf 'gpu_check: not passed: %s\n' "${failed[@]}" >&2
    exit 1
fi
