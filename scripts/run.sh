#!/usr/bin/env bash
# make run: the back end (sim fabric) and two guests booted from the PVH image
# under QEMU, with a gateway to Linux when we have the rights for it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
echo "run: building the back end and the guest image (release)..."
cargo build --release --quiet -p ib-backend
cargo build --release --quiet -p guest --target x86_64-unknown-none

RUN=target/run
rm -rf "$RUN"
mkdir -p "$RUN"
BACKEND=target/release/ib-backend
IMAGE=target/x86_64-unknown-none/release/guest
CONTROL="$RUN/control.sock"

pids=()
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "run: stopping guests and back end"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

GATEWAY=()
if [ "$(id -u)" -eq 0 ] && [ -c /dev/net/tun ] && ! ip link show ibgw0 >/dev/null 2>&1; then
    GATEWAY=(--gateway ibgw0=10.77.0.1/24)
else
    echo "run: no root (or no /dev/net/tun, or ibgw0 exists): skipping the Linux gateway."
    echo "     The guests still reach each other; Linux cannot reach them."
fi

"$BACKEND" run --control "$CONTROL" \
    --guest "name=g1,socket=$RUN/g1.sock" --guest "name=g2,socket=$RUN/g2.sock" \
    "${GATEWAY[@]}" >"$RUN/backend.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$RUN/g2.sock" ] && [ -S "$CONTROL" ] && break; sleep 0.1; done

boot() { # name socket cmdline
    qemu-system-x86_64 -accel tcg -machine q35 -m 128M -smp 1 \
        -display none -serial stdio -monitor none -no-reboot -nic none \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -chardev "socket,path=$2,id=ib" -device ivshmem-doorbell,chardev=ib,vectors=1 \
        -kernel "$IMAGE" -append "$3" >"$RUN/$1.log" 2>&1 &
    pids+=($!)
}
echo "run: booting g1 (10.77.0.2) and g2 (10.77.0.3) under QEMU..."
boot g1 "$RUN/g1.sock" "ip=10.77.0.2/24 gw=10.77.0.1 name=g1"
boot g2 "$RUN/g2.sock" "ip=10.77.0.3/24 gw=10.77.0.1 name=g2 peer=10.77.0.2"

wait_for() { # file pattern seconds
    for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "run: $1 did not show '$2' within $3 s; last lines:"; tail -5 "$1"; return 1
}
wait_for "$RUN/g1.log" "network up" 60
wait_for "$RUN/g2.log" "peer 10.77.0.2 answered" 60
echo "run: the guests found each other:"
grep -h "network up\|peer 10.77.0.2" "$RUN/g1.log" "$RUN/g2.log" | sed 's/^/    /'

if [ "${#GATEWAY[@]}" -gt 0 ]; then
    wait_for "$RUN/backend.log" "gateway: ibgw0" 10
    echo "run: Linux pings the guests through the gateway:"
    ping -c 2 -W 2 10.77.0.2 | sed 's/^/    /'
    ping -c 2 -W 2 10.77.0.3 | sed 's/^/    /'
    echo "run: curl fetches g2's status page:"
    curl -sS -m 10 http://10.77.0.3/stats | head -12 | sed 's/^/    /'
fi

echo
echo "The guests are running."
if [ "${#GATEWAY[@]}" -gt 0 ]; then
    echo "  ping 10.77.0.2 / 10.77.0.3, curl http://10.77.0.3/, or any TCP/UDP to them"
fi
echo "  $BACKEND stats --control $CONTROL      # counters"
echo "  logs: $RUN/g1.log $RUN/g2.log $RUN/backend.log"
echo "Press Ctrl-C to stop."
wait
