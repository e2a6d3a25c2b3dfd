#!/usr/bin/env bash
# The CUDA check, in one command for a machine with an NVIDIA GPU and a Python that has a
# CUDA build of torch (about 5 minutes on an H100). Run from the repository root:
#
#   bash benchmarks/gpu/check.sh                # results in $OUT (or benchmarks/out/gpu)
#   MMAL_GPU_CHECK_CPU=1 MMAL_GPU_CHECK_SCALING_N=10000 MMAL_GPU_CHECK_STRATEGIES="random bald" \
#       MMAL_GPU_CHECK_LOCKSTEP_KS=1,8 bash benchmarks/gpu/check.sh --n 2000   # a quick dry run without a GPU
#
# 1. installs mmal and the strategy/synthetic plugins (editable, no network; the wheels in
#    ./.whl, from benchmarks/gpu/wheels.sh, supply what the image lacks);
# 2. runs the strategy plugin's tests, which use the GPU (`device: auto`) where torch sees one;
# 3. times the selection benchmark: mmal on the GPU against the CPU peers of the same run
#    (given every core: MMAL_GPU_CHECK_THREADS, default nproc), then the coreset/badge
#    scaling table up to N = 1M;
# 4. runs a small experiment with the model and every strategy on the GPU and on the CPU and
#    reports how far their final accuracies are apart;
# 5. lockstep training: fusion-mlp model-steps per second at K = 1, 64, 1024 runs in one
#    stacked network on the GPU, and the pitfall study's wall time on the GPU against the CPU
#    (MMAL_GPU_CHECK_LOCKSTEP_KS, MMAL_GPU_CHECK_STUDY_SEEDS shrink them for a dry run), and
#    the batched prediction of K runs on the device against each run's own (the largest
#    difference of their answers, MMAL_GPU_CHECK_PREDICT_K).
# Extra arguments go to the selection benchmark (e.g. --n 2000 for a quick try).
set -uo pipefail
out=${OUT:-benchmarks/out/gpu}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mmal-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/mmal-site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation \
    -e . -e plugins/mmal-strategies -e plugins/mmal-synthetic > /tmp/mmal-install.log 2>&1 || { tail /tmp/mmal-install.log; exit 1; }

python3 - <<'PY' 2>&1 | tee -a "$out/summary.txt" || exit 1
import os, torch
ok = torch.cuda.is_available()
print("torch", torch.__version__, "cuda:", torch.cuda.get_device_name(0) if ok else "none")
if not ok and not os.environ.get("MMAL_GPU_CHECK_CPU"):
    raise SystemExit("no GPU visible to torch: nothing to check (MMAL_GPU_CHECK_CPU=1 for a dry run)")
PY

log "strategy tests (device auto)"
python3 -m pytest -q -p no:cacheprovider plugins/mmal-strategies > "$out/tests.txt" 2>&1
tail -n 3 "$out/tests.txt" | tee -a "$out/summary.txt"

log "selection benchmark"
python3 benchmarks/selection/run.py --strategies coreset kmeans badge typiclust bald bmmal \
    --impls mmal reference sklearn20 --threads "${MMAL_GPU_CHECK_THREADS:-$(nproc)}" --out "$out/selection.json" "$@" > "$out/selection.md" 2>&1
tail -n 25 "$out/selection.md" | tee -a "$out/summary.txt"

log "scaling (coreset, badge)"
# shellcheck disable=SC2086  # a list of sizes
python3 benchmarks/selection/run.py --scaling-only --scaling-n ${MMAL_GPU_CHECK_SCALING_N:-10000 100000 1000000} \
    --out "$out/scaling.json" > "$out/scaling.md" 2>&1
tail -n 12 "$out/scaling.md" | tee -a "$out/summary.txt"

log "the same small experiment on the GPU and on the CPU"
# shellcheck disable=SC2086  # a list of names
python3 benchmarks/gpu/loop_parity.py ${MMAL_GPU_CHECK_STRATEGIES:+--strategies $MMAL_GPU_CHECK_STRATEGIES} 2>&1 | tee -a "$out/summary.txt"

log "lockstep training throughput (fusion-mlp, K runs in one stacked network)"
device=cuda
python3 -c "import torch; raise SystemExit(0 if torch.cuda.is_available() else 1)" || device=cpu
python3 benchmarks/lockstep/throughput.py --device "$device" --ks "${MMAL_GPU_CHECK_LOCKSTEP_KS:-1,64,1024}" \
    --separate 4 2>&1 | tee "$out/lockstep_throughput.md" | tee -a "$out/summary.txt"

log "batched prediction on the device (predict_many against each model's predict)"
python3 benchmarks/lockstep/predict_device.py --device "$device" --k "${MMAL_GPU_CHECK_PREDICT_K:-64}" 2>&1 \
    | tee "$out/lockstep_predict.md" | tee -a "$out/summary.txt"

log "pitfall study wall time, lockstep: GPU against CPU"
if [ "$device" = cuda ]; then
    # shellcheck disable=SC2086  # an optional flag and its value
    python3 benchmarks/lockstep/study.py benchmarks/pitfalls.yaml --gpu-vs-cpu --lockstep-workers "$(nproc)" \
        ${MMAL_GPU_CHECK_STUDY_SEEDS:+--seeds $MMAL_GPU_CHECK_STUDY_SEEDS} --out "$out/lockstep" 2>&1 \
        | tee "$out/lockstep_study.md" | tee -a "$out/summary.txt"
else
    echo "no GPU: the study comparison needs one (skipped in a dry run)" | tee -a "$out/summary.txt"
fi
