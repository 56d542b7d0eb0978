#!/usr/bin/env bash
# Installs every build and test dependency of svfs from Debian 12 packages.
# Idempotent: packages already present are skipped by apt-get; safe to run repeatedly.
set -euo pipefail

packages=(
  cmake g++ make pkg-config ninja-build
  libboost-dev
  capnproto libcapnp-dev
  libfuse3-dev fuse3
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libseccomp-dev libcap-ng-dev libcli11-dev nlohmann-json3-dev
  # svfs-versiond --federation: the NATS C client, the server its tests start, and openssl for
  # the certificates of its TLS test
  libnats-dev nats-server openssl
  # The libFuzzer harnesses (scripts/run-fuzzer.sh): clang 16 is the oldest Debian 12 clang that
  # compiles libstdc++ 12's <expected>; libclang-rt-16-dev has libFuzzer and the sanitizers
  clang-16 libclang-rt-16-dev ccache
  attr acl util-linux procps
  # An unprivileged svfsd with --uid-map/--gid-map runs newuidmap/newgidmap (the vhost tests too)
  uidmap
  # Man pages (help2man) and the .deb (CPack's DEB generator runs dpkg-shlibdeps; the package test
  # runs systemd-analyze verify on the units)
  help2man dpkg-dev systemd
  # tests/posix: CPython's own file-system tests, the conformance reference run on host and mount
  python3 libpython3.11-testsuite
  # tests/integration/metrics_test.cc parses /metrics with Prometheus' own parser; svfs-bench plots
  python3-prometheus-client python3-matplotlib
  qemu-system-common qemu-system-x86 busybox-static kmod cpio xz-utils linux-image-amd64
  # guest-kmod-patches/build.sh: same Debian version as linux-image-amd64's kernel (it checks)
  linux-headers-amd64 linux-source-6.1
  # The 6.12 guest (bookworm-security): scripts/guest-image.sh --kernel 6.12 installs the image
  # named by this package's version, guest-kmod-patches/build.sh the headers at that version
  linux-source-6.12
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]} (run it in a root shell)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
