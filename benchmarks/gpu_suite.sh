#!/usr/bin/env bash
# Everything that needs the GPU, in one call of the device tool:
#   build (offline, no build isolation) -> GPU tests -> GPU benchmarks.
# Usage on the device machine, from the repository root:  bash benchmarks/gpu_suite.sh
# Writes logs and JSON under $OUT when set.
set -uo pipefail
OUT="${OUT:-/tmp/tiemb-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== build: pip install --no-build-isolation --no-deps ."
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1
rc=$?
echo "build rc=$rc in $(( $(date +%s) - start )) s"
[ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit $rc; }
(cd /tmp && python3 -c "import tiemb, json; print(json.dumps(tiemb.build_info())); print('cuda_available', tiemb.cuda_available())")

echo "== tests (TensorFlow is absent here: its oracle tests skip; GPU tests run)"
(cd /tmp && python3 -m pytest "$OLDPWD/tests" -q -p no:cacheprovider -x -rs ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/tests.log" | tail -25)
test_rc=${PIPESTATUS[0]}

echo "== benchmarks"
(cd /tmp && timeout "${BENCH_TIMEOUT:-300}" python3 "$OLDPWD/benchmarks/gpu_bench.py" --json "$OUT/gpu_bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -30)
exit $test_rc
