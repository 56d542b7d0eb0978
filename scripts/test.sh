#!/usr/bin/env bash
# Builds svfs and runs every test suite: unit, integration (real /dev/fuse mounts), vhost-user
# (our frontend against svfsd and the C virtiofsd) and end-to-end (real Linux guests in QEMU);
# then all but the guest boots again in an AddressSanitizer+UndefinedBehaviorSanitizer build;
# then each libFuzzer harness (tests/fuzz/) for 60 s, two at a time (scripts/run-fuzzer.sh).
# Needs root (installs packages, mounts FUSE). Usage: scripts/test.sh [--no-sanitizer] [--no-fuzz]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sanitizer=1
fuzz=1
for arg in "$@"; do
  case "$arg" in
    --no-sanitizer) sanitizer=0 ;;
    --no-fuzz) fuzz=0 ;;
    *) echo "test: unknown option $arg (--no-sanitizer, --no-fuzz)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "test: run as root: the tests install packages and mount FUSE file systems" >&2
  exit 1
fi

"$root/scripts/build.sh" "$root/build"
echo "test: running all tests (build)"
# Everything but the guest boots must pass at once. A guest-boot test (label e2e) that fails runs
# once more and must pass then; its first failure stays in the log, named on a "test: FLAKY?"
# line (guest boots under TCG have hung intermittently; see docs/operations.md).
(cd "$root/build" && ctest --output-on-failure -j1 --timeout 600 -LE e2e)
if ! (cd "$root/build" && ctest --output-on-failure -j1 --timeout 600 -L e2e); then
  echo "test: FLAKY? rerunning the failed guest tests once: $(cd "$root/build" && tr '\n' ' ' <Testing/Temporary/LastTestsFailed.log)"
  (cd "$root/build" && ctest --rerun-failed --output-on-failure -j1 --timeout 600)
fi

if [ "$sanitizer" = 1 ]; then
  "$root/scripts/build.sh" "$root/build-asan" -DSVFS_SANITIZE=ON -DSVFS_BUILD_BENCHMARKS=OFF
  echo "test: running unit, integration and vhost-user tests (ASan+UBSan build; the conformance runs only in the release build)"
  (cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j1 --timeout 900 -LE "e2e|conformance")
fi
if [ "$fuzz" = 1 ]; then
  echo "test: fuzzing each libFuzzer target for 60 s (build-fuzz, clang)"
  "$root/scripts/run-fuzzer.sh" --parallel 2 60
fi
echo "test: all suites passed"
