#!/usr/bin/env bash
# make asan: the extension and llama.cpp built with AddressSanitizer and UndefinedBehaviorSanitizer
# (build/asan, apart from the normal build), then the unit tests, the bad-input corpus, the
# concurrency and vision tests and the exit test run against that build. Any report fails the
# run. .ci/run runs it after the normal suite.
#
# The interpreter is not instrumented, so the sanitizer runtimes are preloaded; leak checking is
# off (CPython keeps its objects to the end by design). The editable install's import hook is
# told to step aside (SKBUILD_EDITABLE_SKIP) so that the instrumented module is the one imported,
# in the test process and in every child it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUILD=build/asan
TESTS=${ASAN_TESTS:-tests/unit tests/integration/test_corpus.py tests/integration/test_concurrency.py tests/integration/test_vision.py tests/integration/test_soak.py::test_interpreter_exit_with_requests_running_is_prompt}

# -O1 -g1: line tables for the reports, and about half the compile time of -O2 -g (CI builds it
# from cold)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS_RELEASE="-O1 -g1" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1" \
  -DLLAMACPP_INTEGRATIONS_SANITIZE=ON -DGGML_CCACHE=ON \
  -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
  -Dnanobind_DIR="$("$PYTHON" -m nanobind --cmake_dir)" >/dev/null
cmake --build "$BUILD" --target _core

SITE="$BUILD/site"
rm -rf "$SITE" && mkdir -p "$SITE"
cp -r src/llamacpp_integrations "$SITE/"
find "$SITE" -name '_core*.so' -delete
cp "$BUILD"/_core*.so "$SITE/llamacpp_integrations/"

skip=""
for d in "$PWD"/build/cp*; do skip="$skip:$d"; done
export SKBUILD_EDITABLE_SKIP="${skip#:}"
export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LLAMACPP_TEST_TIME_SCALE=10 # per-case limits of the corpus; pytest's own timeout below
"$PYTHON" -c "import llamacpp_integrations._core as c, sys; sys.exit(0 if '$SITE' in c.__file__ else 'not the instrumented module: ' + c.__file__)"
# shellcheck disable=SC2086
exec "$PYTHON" -m pytest -p no:cacheprovider -q -o timeout=3000 $TESTS "$@"
