#!/usr/bin/env bash
# Installs what the build and tests need, idempotently: Debian packages and
# the bare-metal rustup target. Safe to run again and again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

need_pkgs=()
command -v tshark >/dev/null 2>&1 || need_pkgs+=(tshark)
# rdma-sys (bindgen) needs the verbs headers, librdmacm and libclang.
# The end-to-end tests use Linux's ping, curl and ip (network namespaces,
# the gateway's TAP). The benchmarks check Linux's TCP figure against
# iperf3 and its UDP RR against sockperf.
for pkg in pkg-config libibverbs-dev librdmacm-dev libclang-dev clang iputils-ping curl iproute2 ethtool qemu-system-x86 binutils iperf3 sockperf; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "deps: installing ${need_pkgs[*]}"
    # tshark asks whether non-root users may capture; answer before it asks.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
    # iperf3 asks whether to run a daemon; it must not.
    echo "iperf3 iperf3/start_daemon boolean false" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx x86_64-unknown-none; then
    echo "deps: adding rustup target x86_64-unknown-none"
    rustup target add x86_64-unknown-none
fi

if ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add clippy
fi
echo "deps: ok"
