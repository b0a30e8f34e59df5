#!/usr/bin/env bash
# One command for a machine with a GPU (issue 16): what the devices are, the core tests, the
# fidelity tests (Keras ports, Captum's DeepLift cases, any tests/test_*oracle*.py) at
# precision "highest", the dispatch bench and the main bench at a GPU size. Each step has a
# timeout so that the whole run fits in ~8 minutes; a failed step is reported and the next one
# still runs; the script exits non-zero if any step failed.
#
#   experiments/gpu_check.sh                     # on the GPU machine (pip install -e .[cuda])
#   GPU_CHECK_QUICK=1 experiments/gpu_check.sh   # a tiny smoke run of the same steps (a CPU)
#
# The report goes to $OUT/gpu_check.md when $OUT is set, else experiments/results/gpu_check.md
# (bench tables next to it). PYTHON picks the interpreter (default: python).
set -euo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
QUICK=${GPU_CHECK_QUICK:-0}
DIR=${OUT:-experiments/results}
mkdir -p "$DIR"
REPORT="$DIR/gpu_check.md"
FAILED=()

log() { printf '%s\n' "$@" | tee -a "$REPORT"; }

# step NAME TIMEOUT_S CMD...: run CMD with a timeout, its output's tail into the report.
step() {
  local name=$1 limit=$2 rc=0 start=$SECONDS out
  shift 2
  out=$(mktemp)
  log "" "## $name" "" '```' "\$ $*"
  if timeout --kill-after=10 "$limit" "$@" >"$out" 2>&1; then rc=0; else rc=$?; fi
  tail -n 40 "$out" | tee -a "$REPORT"
  rm -f "$out"
  log '```' ""
  if [[ $rc -eq 0 ]]; then
    log "**ok** in $((SECONDS - start)) s"
  else
    [[ $rc -eq 124 || $rc -eq 137 ]] && log "**timed out** after ${limit} s" \
      || log "**failed** (exit $rc) in $((SECONDS - start)) s"
    FAILED+=("$name")
  fi
}

if [[ $QUICK == 1 ]]; then  # tiny sizes: checks that every step runs, on any machine
  CORE=(tests/test_core_api.py tests/test_dispatch.py -k "sums_to_delta or user_jit or one_dispatch")
  T_CORE=300; T_FID=300; T_BENCH=300; T_CONV=300
  BENCH=(-m benchmarks.bench --quick --n-mnist 4 --repeats 1 --no-cats --no-torch
         --scaling-points none --out "$DIR/BENCH_gpu_check.md")
  DISPATCH=(-m benchmarks.bench_dispatch --repeats 3 --sizes 1x1,4x2
            --out "$DIR/bench_dispatch_gpu_check.md")
  CONV=(-m benchmarks.bench_conv_transpose --repeats 2 --pairs 4x2
        --out "$DIR/bench_conv_transpose_gpu_check.md")
else
  CORE=(tests/test_core_api.py tests/test_core_exact.py tests/test_modes.py
        tests/test_reveal_cancel.py tests/test_loops.py)
  T_CORE=240; T_FID=120; T_BENCH=120; T_CONV=60
  BENCH=(-m benchmarks.bench --repeats 3 --no-captum --scaling-points 1,1000,100000
         --out "$DIR/BENCH_gpu.md")
  DISPATCH=(-m benchmarks.bench_dispatch --repeats 20 --out "$DIR/bench_dispatch_gpu.md")
  # phases vs jax.vjp on this device: PHASED_TRANSPOSE_PLATFORMS (jaxlift/rules/linear.py) is
  # the CPU only until a GPU run shows the phases pay there
  CONV=(-m benchmarks.bench_conv_transpose --repeats 10 --pairs 8192x8
        --out "$DIR/bench_conv_transpose_gpu.md")
fi
# fidelity: compare with Keras (ported models) and with DeepLIFT implementations' scores
FIDELITY=()
for f in tests/test_*oracle*.py tests/test_keras_models.py tests/test_keras_h5.py \
         tests/test_captum_deeplift_cases.py; do
  [[ -e $f ]] && FIDELITY+=("$f")
done
[[ $QUICK == 1 ]] && FIDELITY=(tests/test_captum_deeplift_cases.py -k "closed_form")

: >"$REPORT"
log "# jaxlift GPU check" "" "$(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$([[ $QUICK == 1 ]] && echo ', QUICK mode (tiny sizes)')"
step "nvidia-smi" 30 bash -c 'command -v nvidia-smi >/dev/null && nvidia-smi || echo "no nvidia-smi on this machine"'
step "jax devices" 60 "$PY" -c 'import jax; print(jax.__version__, jax.default_backend(), jax.devices())'
step "core tests" "$T_CORE" "$PY" -m pytest -q -x -p no:cacheprovider "${CORE[@]}"
if [[ ${#FIDELITY[@]} -gt 0 ]]; then
  step "fidelity tests at precision highest" "$T_FID" env JAX_DEFAULT_MATMUL_PRECISION=highest \
    "$PY" -m pytest -q -x -p no:cacheprovider "${FIDELITY[@]}"
else
  log "" "## fidelity tests" "" "none found"; FAILED+=("fidelity tests (none found)")
fi
step "dispatch bench" "$T_BENCH" "$PY" "${DISPATCH[@]}"
step "strided conv transpose bench" "$T_CONV" "$PY" "${CONV[@]}"
step "bench" "$T_BENCH" "$PY" "${BENCH[@]}"

if [[ ${#FAILED[@]} -gt 0 ]]; then
  log "" "FAILED: $(IFS=';'; echo "${FAILED[*]}")"
  exit 1
fi
log "" "All steps passed."
