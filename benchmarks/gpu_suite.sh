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

echo "== toolchain"
{ python3 --version; g++ --version | head -1; nvcc --version | tail -1
  python3 -c "import pybind11, numpy; print('pybind11', pybind11.__version__, 'numpy', numpy.__version__)"; } 2>&1 | tee "$OUT/toolchain.txt"
# A carried newer pybind11 (.whl/) is used only when the machine's is too old.
if ls .whl/pybind11-*.whl >/dev/null 2>&1 && ! python3 -c "import pybind11, sys; v = tuple(int(x) for x in pybind11.__version__.split('.')[:2]); sys.exit(v < (2, 12))"; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/pybind11-*.whl && export PYTHONPATH=/tmp/site
  python3 -c "import pybind11; print('using carried pybind11', pybind11.__version__)"
fi

# Debian packages carried in .debs/ (redis-server, redis-tools, libhiredis0.14,
# libhiredis-dev, libjemalloc2, liblzf1, nlohmann-json3-dev: Debian 12 builds)
# are unpacked with dpkg -x into /tmp/debroot, never into /, before the build:
# CMake then finds hiredis (pkg-config under a sysroot) and nlohmann/json, and
# the distributed tests find redis-server. Where the unpacked redis-server
# cannot run (another OS's libc), say so: the distributed tests skip with that reason.
if ls .debs/*.deb >/dev/null 2>&1; then
  echo "== .debs: unpacking $(ls .debs/*.deb | wc -l) packages into /tmp/debroot"
  DEBROOT=/tmp/debroot
  mkdir -p "$DEBROOT"
  for deb in .debs/*.deb; do dpkg -x "$deb" "$DEBROOT" || echo "dpkg -x $deb failed"; done
  multiarch=$(ls -d "$DEBROOT"/usr/lib/*-linux-gnu 2>/dev/null | head -1)
  export PATH="$DEBROOT/usr/bin:$DEBROOT/usr/sbin:$PATH"
  export LD_LIBRARY_PATH="${multiarch:+$multiarch:}$DEBROOT/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LIBRARY_PATH="${multiarch:+$multiarch:}$DEBROOT/usr/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export CPATH="$DEBROOT/usr/include${CPATH:+:$CPATH}"
  export CMAKE_PREFIX_PATH="$DEBROOT/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # hiredis.pc says prefix=/usr: the sysroot maps its -I/-L flags into $DEBROOT.
  export PKG_CONFIG_SYSROOT_DIR="$DEBROOT"
  export PKG_CONFIG_PATH="${multiarch:+$multiarch/pkgconfig:}$DEBROOT/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  pkg-config --modversion hiredis 2>&1 | sed 's/^/hiredis (pkg-config): /'
  if redis_version=$(redis-server --version 2>&1); then
    echo "redis-server: $redis_version"
  else
    echo "redis-server CANNOT RUN here (unpacked from .debs): $redis_version"
    echo "  -> the distributed tests (tests/distributed, GPU tier included) skip with this reason"
  fi
  { echo "debs: $(ls .debs/*.deb | xargs -n1 basename | tr '\n' ' ')"; echo "redis-server --version: $redis_version"; } >> "$OUT/toolchain.txt"
else
  echo "== .debs: none carried (redis-server from the system, if any: $(command -v redis-server || echo absent))"
fi

# The store.json parser (nlohmann/json, header-only) comes from the system
# (nlohmann-json3-dev) or, on a machine without it and without network, from a
# carried copy at .deps/include/nlohmann (cp -r /usr/include/nlohmann .deps/include/).
if [ -f /usr/include/nlohmann/json.hpp ]; then echo "nlohmann/json: system"
elif [ -f /tmp/debroot/usr/include/nlohmann/json.hpp ] && [ -n "${CMAKE_PREFIX_PATH:-}" ]; then echo "nlohmann/json: unpacked from .debs"
elif [ -f .deps/include/nlohmann/json.hpp ]; then echo "nlohmann/json: carried .deps/include"
else echo "nlohmann/json: MISSING (carry .deps/include/nlohmann; the build will stop and say so)"; fi | tee -a "$OUT/toolchain.txt"

echo "== build: pip install --no-build-isolation --no-deps ."
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1
rc=$?
echo "build rc=$rc in $(( $(date +%s) - start )) s"
[ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit $rc; }
(cd /tmp && python3 -c "import tiemb, json; print(json.dumps(tiemb.build_info())); print('cuda_available', tiemb.cuda_available())")
# The bundle's lookups run as XLA FFI custom calls: the handlers are built only where jax was importable at build time.
(cd /tmp && python3 -c "import tiemb._C as c; print('xla_ffi handlers', sorted(getattr(c, 'xla_ffi_targets', dict)()))")
(cd /tmp && so=$(python3 -c "import tiemb._C as c; print(c.__file__)") && ldd "$so" > "$OUT/ldd.txt" 2>&1; nm -DC --defined-only "$so" 2>/dev/null | grep -c "std::" >> "$OUT/ldd.txt"
 ldd "$(dirname "$so")/libtiemb_core.so" >> "$OUT/ldd.txt" 2>&1)

echo "== CPU-engine error path (crashed once on this machine)"
(cd /tmp && python3 -X faulthandler -m pytest "$OLDPWD/tests/engine/test_bad_input.py" -q -p no:cacheprovider -x 2>&1 | tail -5)
if [ "${PIPESTATUS[0]}" -ne 0 ] && command -v cuda-gdb >/dev/null; then
  (cd /tmp && cuda-gdb -q -batch -ex run -ex bt --args python3 -m pytest "$OLDPWD/tests/engine/test_bad_input.py" -q -p no:cacheprovider -x 2>&1 | grep -E "^#|signal" | head -40 > "$OUT/gdb.txt"; head -20 "$OUT/gdb.txt")
fi

# One device call holds at most 10 minutes: SKIP_TESTS=1 (benchmarks only) and
# SKIP_BENCH=1 (tests, the tiered profile and the bundles only) split the suite in two calls;
# TEST_PATH=tests/some_file.py runs one part of the tests; SKIP_PROFILE=1 and
# SKIP_BUNDLES=1 leave out those steps; QUICK_TIERED=1 adds the tiered variants'
# benchmark on one case. PROFILE_TIMEOUT / QUICK_TIERED_TIMEOUT (s) bound those two
# steps (raised by 30 s when the lane probe joined their variant lists).
test_rc=0
if [ -z "${SKIP_TESTS:-}" ]; then
echo "== tests (TensorFlow is absent here: its oracle tests skip; GPU tests run)"
# TEST_PATH may list several paths (space-separated, relative to the repository root);
# PYTEST_K is a -k expression (spaces allowed), PYTEST_ARGS more words.
# (Made absolute here, from the repository root: OLDPWD is that root only inside the cd /tmp subshells.)
test_paths=()
for p in ${TEST_PATH:-tests}; do test_paths+=("$PWD/$p"); done
(cd /tmp && timeout "${TEST_TIMEOUT:-3600}" python3 -m pytest "${test_paths[@]}" -q -p no:cacheprovider --maxfail=10 -rs ${PYTEST_K:+-k "$PYTEST_K"} ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/tests.log" | tail -25)
test_rc=${PIPESTATUS[0]}

if [ -z "${SKIP_PROFILE:-}" ]; then
echo "== profile of a tiered call (kernels, via torch.profiler/CUPTI)"
(cd /tmp && timeout "${PROFILE_TIMEOUT:-150}" python3 "$OLDPWD/benchmarks/profile_tiered.py" 2>&1 | tee "$OUT/profile.log" | tail -25)
fi
fi

# QUICK_TIERED=1: the tiered variants side by side on the dim-16 case only (a short call's benchmark).
if [ -n "${QUICK_TIERED:-}" ]; then
echo "== tiered variants, dim 16 case (issue 15)"
(cd /tmp && TIEMB_BENCH_TIERED="${TIEMB_BENCH_TIERED:-default,list_probe,list_reads,list_both,prefetch,list_both_prefetch,lane_probe,lane_prefetch}" \
   timeout "${QUICK_TIERED_TIMEOUT:-120}" python3 "$OLDPWD/benchmarks/gpu_bench.py" --tiered-only --no-sim --tiered-dims 16 \
   --json "$OUT/tiered_quick.json" 2>&1 | tee "$OUT/tiered_quick.log" | tail -20)
fi

echo "== bundles: exported where TensorFlow is (benchmarks/export_bundles.py), served here without it"
if [ -n "${SKIP_BUNDLES:-}" ]; then
  echo "skipped (SKIP_BUNDLES)"
elif ls benchmarks/bundles/*/bundle.json >/dev/null 2>&1; then
  (cd /tmp && timeout "${BUNDLE_TIMEOUT:-300}" python3 "$OLDPWD/benchmarks/gpu_bundles.py" --bundles "$OLDPWD/benchmarks/bundles" \
     --json "$OUT/gpu_bundles.json" 2>&1 | tee "$OUT/bundles.log" | tail -60)
  echo "== bundles: Python per request over the compiled program (cupy feeds)"
  (cd /tmp && timeout "${OVERHEAD_TIMEOUT:-180}" python3 "$OLDPWD/benchmarks/bundle_call_overhead.py" --device gpu \
     --bundles "$OLDPWD/benchmarks/bundles" --models wd_l0,deepfm_l0,dlrm_l0,deepctr_wdl_l0 \
     --json "$OUT/bundle_call_overhead.json" 2>&1 | tee "$OUT/call_overhead.log" | tail -16)
else
  echo "no bundles under benchmarks/bundles/: run python benchmarks/export_bundles.py where TensorFlow is, and carry them"
fi
[ -n "${SKIP_BENCH:-}" ] && exit $test_rc
# SKIP_GPU_BENCH=1: leave out the engine benchmarks and the NVE case (the longest steps).
if [ -z "${SKIP_GPU_BENCH:-}" ]; then
echo "== benchmarks"
(cd /tmp && timeout "${BENCH_TIMEOUT:-360}" python3 "$OLDPWD/benchmarks/gpu_bench.py" --json "$OUT/gpu_bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -40)
echo "== NVE-shaped case (issue 15): 16 GB table in pinned host memory, GPU cache 10%"
(cd /tmp && timeout "${NVE_TIMEOUT:-120}" python3 "$OLDPWD/benchmarks/nve_case.py" --json "$OUT/nve_case.json" 2>&1 | tee "$OUT/nve.log" | tail -12)
fi
echo "== distributed GPU tier (issue 16): GPU cache over a local Redis Cluster"
if (cd /tmp && python3 -c "import sys; from tiemb.distributed.local_cluster import redis_missing_reason as r; w = r(); print(w or ''); sys.exit(1 if w else 0)"); then
  (cd /tmp && timeout "${DIST_TIMEOUT:-240}" python3 "$OLDPWD/benchmarks/distributed_gpu_bench.py" 2>&1 | tee "$OUT/distributed_gpu.log" | tail -12)
else
  echo "skipped: no runnable redis-server (carry the Debian packages in .debs/)"
fi
exit $test_rc
