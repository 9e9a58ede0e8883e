#!/usr/bin/env bash
# make bench-vm: what a user would pick instead. Two Linux VMs with
# virtio-net joined by `-netdev socket`, against two ibguest unikernel guests
# on `ib-backend --provider sim`, all four under the same QEMU (TCG) with the
# same machine, CPU and memory; the same TCP sender/sink and UDP RR client and
# echo server (the benchmark's Linux peer in the VMs, the unikernel's own
# `send=` and `rr=` against its discard and echo services). See
# benchvm/README.md.
#
# Settings (environment):
#   BENCHVM_RUNS   alternating runs of each pair (default 5; medians reported)
#   BENCHVM_BYTES  TCP bytes per run (default 33554432, 32 MiB)
#   BENCHVM_COUNT  timed UDP round trips per run (default 5000, after 100
#                  untimed ones)
#   BENCHVM_SIZE   UDP payload bytes (default 64)
#   BENCHVM_MTU    the Linux VMs' eth0 MTU (default 2044, IPoIB's MTU at IB
#                  MTU 2048, which the unikernels use)
# The table goes to stdout (and target/benchvm/table.md); progress to stderr.
# Consoles and logs: target/benchvm/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/benchvm
LOGS=$OUT/logs
RUNS=${BENCHVM_RUNS:-5}
BYTES=${BENCHVM_BYTES:-33554432}
COUNT=${BENCHVM_COUNT:-5000}
SIZE=${BENCHVM_SIZE:-64}
MTU=${BENCHVM_MTU:-2044}
for v in RUNS BYTES COUNT SIZE MTU; do
    case "${!v}" in
        "" | *[!0-9]* | 0)
            echo "bench-vm: BENCHVM_$v=${!v}: give a positive number" >&2
            exit 2
            ;;
    esac
done
if [ "$SIZE" -lt 8 ] || [ "$SIZE" -gt 2016 ]; then
    echo "bench-vm: BENCHVM_SIZE=$SIZE: give 8..2016 (one IPoIB packet)" >&2
    exit 2
fi
T_START=$(date +%s)
say() { echo "bench-vm: $*" >&2; }
die() {
    echo "bench-vm: error: $*" >&2
    exit 1
}
# The QEMU machine of every guest, Linux or unikernel: qemu-tests' and
# `make run`'s flags for the unikernel.
QEMU_MACHINE=(-accel tcg -machine q35 -m 128M -smp 1)

# --- what it needs -------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v strip >/dev/null || need+=(binutils)
command -v ss >/dev/null || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]} (apt-get)"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; } ||
        die "missing ${need[*]} and cannot install them with apt-get; install them (apt-get install ${need[*]}) and run again"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
command -v cargo >/dev/null || die "cargo not found (install Rust first)"
[ -f /usr/share/qemu/pvh.bin ] || die "QEMU's PVH boot ROM /usr/share/qemu/pvh.bin is missing (apt-get install qemu-system-data)"

# --- builds --------------------------------------------------------------------------
mkdir -p "$OUT" "$LOGS"
say "building ib-backend and ibguest-bench (release) and the unikernel image"
cargo build --release --quiet -p ib-backend -p ibguest-bench || die "cargo build of ib-backend/ibguest-bench failed"
cargo build --release --quiet -p guest --target x86_64-unknown-none || die "cargo build of the unikernel image failed"
BACKEND=target/release/ib-backend
PEER=target/release/ibguest-bench
IMAGE=target/x86_64-unknown-none/release/guest
for f in "$BACKEND" "$PEER" "$IMAGE"; do [ -x "$f" ] || die "$f was not built"; done

# --- the Linux VMs' kernel and initramfs (Debian packages) ----------------------------
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
export DVM_DL=target/softroce/dl # shared with `make softroce`
export DVM_PKG=$OUT/pkg
export DVM_SAY=say
# shellcheck source=scripts/debian-vm.sh
. scripts/debian-vm.sh
# shellcheck disable=SC2086 # a list of names
dvm_kernel $MODULES
dvm_busybox
say "Linux VM: kernel $DVM_KVER ($(basename "$DVM_KDEB")), busybox-static, ibguest-bench's Linux peer"
INITRD=$OUT/linux.cpio.gz
sum=$(printf '%s\n' "$DVM_BUSYBOX" benchvm/vm-init.sh scripts/debian-vm.sh "$PEER" "$DVM_KDEB" |
    xargs stat -L -c '%n %s %Y' | sha256sum | cut -d' ' -f1)
if [ -f "$INITRD" ] && [ "$(cat "$OUT/linux.stamp" 2>/dev/null)" = "$sum" ]; then
    say "initramfs $INITRD is up to date"
else
    root=$OUT/root
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp}
    cp "$DVM_BUSYBOX" "$root/bin/busybox"
    cp benchvm/vm-init.sh "$root/init"
    chmod 755 "$root/init"
    strip --strip-debug -o "$root/bin/ibguest-bench" "$PEER"
    dvm_copy_with_libs "$root" "$PEER"
    # shellcheck disable=SC2086 # a list of names
    dvm_add_modules "$root" $MODULES
    dvm_pack "$root" "$INITRD"
    echo "$sum" >"$OUT/linux.stamp"
    rm -rf "$root"
    say "initramfs $INITRD: $(du -h "$INITRD" | cut -f1)"
fi

# --- processes -------------------------------------------------------------------------
# Every QEMU and back end started here is in PIDS and is killed on exit.
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
trap 'say "interrupted; stopping the VMs"; exit 130' INT TERM
stop() { # PID...: kill and reap, and forget them
    local p q keep
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    keep=()
    for q in "${PIDS[@]}"; do
        case " $* " in *" $q "*) ;; *) keep+=("$q") ;; esac
    done
    PIDS=("${keep[@]}")
}
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 20000))
        if [ -z "$(ss -Htln "sport = :$p")" ]; then
            echo "$p"
            return
        fi
    done
    die "no free TCP port on 127.0.0.1"
}
# wait_line FILE PATTERN SECONDS PID [FAIL-PATTERN]: sets LINE to the first
# line of FILE matching PATTERN (extended regex), once it is there. Fails
# (printing FILE's tail) on the deadline, when PID is gone first, or on
# FAIL-PATTERN. (Not for a command substitution: a signal's trap runs only
# after the foreground command, here at most a 0.2 s sleep.)
wait_line() {
    local file=$1 pat=$2 deadline=$(($(date +%s) + $3)) pid=$4 fail=${5:-}
    while :; do
        if grep -Eq -- "$pat" "$file" 2>/dev/null; then
            LINE=$(grep -E -m1 -- "$pat" "$file" | tr -d '\r')
            return 0
        fi
        if [ -n "$fail" ] && grep -Eq -- "$fail" "$file" 2>/dev/null; then
            say "$file: $(grep -E -m1 -- "$fail" "$file" | tr -d '\r')"
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            sleep 0.3
            if grep -Eq -- "$pat" "$file" 2>/dev/null; then
                LINE=$(grep -E -m1 -- "$pat" "$file" | tr -d '\r')
                return 0
            fi
            say "$file: its QEMU stopped before '$pat'"
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "$file: no '$pat' within $3 s"
            break
        fi
        sleep 0.2
    done
    echo "  last lines of $file:" >&2
    tr -d '\r' <"$file" | tail -15 | sed 's/^/    /' >&2
    return 1
}
field() { # LINE WORD: the word after WORD in LINE
    echo "$1" | awk -v w="$2" '{for (i = 1; i < NF; i++) if ($i == w) {print $(i + 1); exit}}'
}

# --- one run of each pair ------------------------------------------------------------------
# Each sets RESULT to "MBPS MEDIAN_US P99_US" (not printed for a command
# substitution: its QEMUs must be in this shell's PIDS).
run_linux() {
    local tag=$1 port serve client con_s con_c sent rr rx sha t0
    port=$(free_port)
    con_s=$LOGS/linux-serve-$tag.console
    con_c=$LOGS/linux-client-$tag.console
    : >"$con_s"
    : >"$con_c"
    t0=$(date +%s)
    qemu-system-x86_64 "${QEMU_MACHINE[@]}" -kernel "$DVM_VMLINUZ" -initrd "$INITRD" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init benchvm=serve benchvm.ip=10.78.0.1 benchvm.mtu=$MTU" \
        -display none -vga none -monitor none -serial "file:$con_s" -no-reboot \
        -netdev "socket,id=n0,listen=127.0.0.1:$port" -device virtio-net-pci,netdev=n0,mac=52:54:00:78:00:01 \
        </dev/null >"$LOGS/linux-serve-$tag.qemu.log" 2>&1 &
    serve=$!
    PIDS+=("$serve")
    wait_line "$con_s" '^BENCHVM-READY' 180 "$serve" '^BENCHVM-FAIL' || {
        stop "$serve"
        return 1
    }
    qemu-system-x86_64 "${QEMU_MACHINE[@]}" -kernel "$DVM_VMLINUZ" -initrd "$INITRD" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init benchvm=client benchvm.ip=10.78.0.2 benchvm.mtu=$MTU benchvm.peer=10.78.0.1 benchvm.bytes=$BYTES benchvm.count=$COUNT benchvm.size=$SIZE" \
        -display none -vga none -monitor none -serial "file:$con_c" -no-reboot \
        -netdev "socket,id=n0,connect=127.0.0.1:$port" -device virtio-net-pci,netdev=n0,mac=52:54:00:78:00:02 \
        </dev/null >"$LOGS/linux-client-$tag.qemu.log" 2>&1 &
    client=$!
    PIDS+=("$client")
    if ! wait_line "$con_c" '^sent [0-9]+ bytes sha256 ' 600 "$client" '^BENCHVM-FAIL' || ! sent=$LINE ||
        ! wait_line "$con_c" '^udp-rr: [0-9]+ round trips' 600 "$client" '^BENCHVM-FAIL' || ! rr=$LINE ||
        ! wait_line "$con_s" '^discard from .*: [0-9]+ bytes sha256 ' 30 "$serve" || ! rx=$LINE; then
        stop "$client" "$serve"
        return 1
    fi
    stop "$client" "$serve"
    sha=$(field "$sent" sha256)
    if [ "$(field "$sent" sent)" != "$BYTES" ] || [ "$(field "$rx" sha256)" != "$sha" ] || ! echo "$rx" | grep -q ": $BYTES bytes"; then
        say "Linux VMs: the sink did not get what was sent: '$sent' / '$rx'"
        return 1
    fi
    CLOCK_LINUX=$(tr -d '\r' <"$con_c" | sed -n 's/^benchvm: .*clocksource \([^ ,]*\).*/\1/p' | head -1)
    # "sent N bytes sha256 H in S s (R MB/s)": MB/s from N and S.
    say "  Linux VMs ($tag): $sent; $rr ($(($(date +%s) - t0)) s with the boots)"
    RESULT=$(awk -v b="$BYTES" -v s="$(field "$sent" in)" -v m="$(field "$rr" median)" -v p="$(field "$rr" p99)" \
        'BEGIN {printf "%.3f %.1f %.1f\n", b / s / 1e6, m, p}')
}

run_unikernel() {
    local tag=$1 dir be u1 u2 con1 con2 sent rr rx sha t0
    dir=$OUT/run-$tag
    rm -rf "$dir"
    mkdir -p "$dir"
    con1=$LOGS/uni-serve-$tag.console
    con2=$LOGS/uni-client-$tag.console
    : >"$con1"
    : >"$con2"
    t0=$(date +%s)
    "$BACKEND" run --provider sim --control "$dir/control.sock" \
        --guest "name=u1,socket=$dir/u1.sock" --guest "name=u2,socket=$dir/u2.sock" \
        >"$LOGS/uni-backend-$tag.log" 2>&1 &
    be=$!
    PIDS+=("$be")
    for _ in $(seq 100); do [ -S "$dir/u2.sock" ] && break; sleep 0.1; done
    [ -S "$dir/u2.sock" ] || {
        say "ib-backend did not listen on $dir/u2.sock; its log:"
        tail -10 "$LOGS/uni-backend-$tag.log" >&2
        stop "$be"
        return 1
    }
    boot_uni() { # CONSOLE SOCKET CMDLINE
        qemu-system-x86_64 "${QEMU_MACHINE[@]}" -kernel "$IMAGE" -append "$3" \
            -display none -monitor none -serial "file:$1" -no-reboot -nic none \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
            -chardev "socket,path=$2,id=ib" -device ivshmem-doorbell,chardev=ib,vectors=1 \
            </dev/null >"${1%.console}.qemu.log" 2>&1 &
    }
    boot_uni "$con1" "$dir/u1.sock" "ip=10.77.0.2/24"
    u1=$!
    PIDS+=("$u1")
    wait_line "$con1" 'ibguest: network up' 60 "$u1" 'ibguest: fatal' || {
        stop "$u1" "$be"
        return 1
    }
    boot_uni "$con2" "$dir/u2.sock" "ip=10.77.0.3/24 send=10.77.0.2:9:$BYTES rr=10.77.0.2:7:$COUNT:$SIZE"
    u2=$!
    PIDS+=("$u2")
    local fail='ibguest: (fatal|send failed|udp-rr failed)'
    if ! wait_line "$con2" '^ibguest: sent [0-9]+ bytes sha256 ' 600 "$u2" "$fail" || ! sent=$LINE ||
        ! wait_line "$con2" '^ibguest: udp-rr: [0-9]+ round trips' 600 "$u2" "$fail" || ! rr=$LINE ||
        ! wait_line "$con1" '^ibguest: discard from .*: [0-9]+ bytes sha256 ' 30 "$u1" || ! rx=$LINE; then
        stop "$u2" "$u1" "$be"
        return 1
    fi
    stop "$u2" "$u1" "$be"
    sha=$(field "$sent" sha256)
    if [ "$(field "$sent" sent)" != "$BYTES" ] || [ "$(field "$rx" sha256)" != "$sha" ] || ! echo "$rx" | grep -q ": $BYTES bytes"; then
        say "unikernels: the discard service did not get what was sent: '$sent' / '$rx'"
        return 1
    fi
    CLOCK_UNI=$(tr -d '\r' <"$con2" | grep -o 'TSC [0-9]* kHz, APIC timer [0-9]* kHz (from the [^)]*)' | head -1)
    # "ibguest: sent N bytes sha256 H in M ms (K KB/s)": MB/s from N and M.
    say "  unikernels ($tag): ${sent#ibguest: }; ${rr#ibguest: } ($(($(date +%s) - t0)) s with the boots)"
    RESULT=$(awk -v b="$BYTES" -v ms="$(field "$sent" in)" -v m="$(field "$rr" median)" -v p="$(field "$rr" p99)" \
        'BEGIN {if (ms < 1) ms = 1; printf "%.3f %.1f %.1f\n", b / (ms / 1000) / 1e6, m, p}')
}

# --- the runs, alternating -------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "ready after $(($(date +%s) - T_START)) s; $RUNS alternating runs of each pair: TCP $BYTES bytes, UDP RR $COUNT x $SIZE bytes"
UNI=()
LIN=()
CLOCK_LINUX=unknown
CLOCK_UNI=unknown
for i in $(seq "$RUNS"); do
    # Odd runs start with the Linux VMs, even ones with the unikernels.
    if [ $((i % 2)) -eq 1 ]; then order="linux unikernel"; else order="unikernel linux"; fi
    for who in $order; do
        say "run $i/$RUNS: $who pair"
        if [ "$who" = linux ]; then
            run_linux "$i" || die "the Linux VM pair failed in run $i (consoles in $LOGS/)"
            LIN+=("$RESULT")
        else
            run_unikernel "$i" || die "the unikernel pair failed in run $i (consoles in $LOGS/)"
            UNI+=("$RESULT")
        fi
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table -------------------------------------------------------------------------------
median_col() { # COLUMN RUN-LINES...: the median of that column (mean of the middle two)
    local c=$1
    shift
    printf '%s\n' "$@" | awk -v c="$c" '{print $c}' | sort -g |
        awk '{v[NR] = $1} END {if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
values_col() { # COLUMN RUN-LINES...: the runs' values, in run order
    local c=$1
    shift
    printf '%s\n' "$@" | awk -v c="$c" '{printf "%s%.1f", (NR > 1 ? ", " : ""), $c}'
}
U_TCP=$(median_col 1 "${UNI[@]}")
L_TCP=$(median_col 1 "${LIN[@]}")
U_MED=$(median_col 2 "${UNI[@]}")
L_MED=$(median_col 2 "${LIN[@]}")
U_P99=$(median_col 3 "${UNI[@]}")
L_P99=$(median_col 3 "${LIN[@]}")
# ratio = how many times better the unikernel pair is (> 1: the unikernels win).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "n/a"}'; }
wins() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(b > 0 && a / b > 1)}'; }
R_TCP=$(ratio "$U_TCP" "$L_TCP")
R_MED=$(ratio "$L_MED" "$U_MED")
R_P99=$(ratio "$L_P99" "$U_P99")
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
QEMU_VER=$(qemu-system-x86_64 --version | head -1 | sed 's/^QEMU emulator version //')
ELAPSED=$(($(date +%s) - T_START))
verdict() { # NAME RATIO-NUMERATOR RATIO-DENOMINATOR
    if wins "$2" "$3"; then echo "the unikernel pair wins on $1"; else echo "the unikernel pair does NOT win on $1"; fi
}
{
    echo "## make bench-vm: ibguest unikernels vs Linux VMs, both under QEMU TCG"
    echo
    echo "| row | unikernel pair (ib-backend sim) | Linux VMs (virtio-net) | ratio (unikernel advantage) |"
    echo "|---|---:|---:|---:|"
    echo "| TCP MB/s, $BYTES bytes (higher is better) | $U_TCP | $L_TCP | $R_TCP |"
    echo "| UDP RR median us, $SIZE B (lower is better) | $U_MED | $L_MED | $R_MED |"
    echo "| UDP RR p99 us, $SIZE B (lower is better) | $U_P99 | $L_P99 | $R_P99 |"
    echo
    echo "- ratio: unikernel/Linux for MB/s, Linux/unikernel for latency; above 1.00x the unikernel pair is better."
    echo "- verdict: $(verdict TCP "$U_TCP" "$L_TCP"); $(verdict 'the RR median' "$L_MED" "$U_MED"); $(verdict 'the RR p99' "$L_P99" "$U_P99")."
    echo "- medians of $RUNS runs per pair, alternating (odd runs Linux first); per run, unikernel TCP MB/s: $(values_col 1 "${UNI[@]}"); Linux: $(values_col 1 "${LIN[@]}"); RR median us unikernel: $(values_col 2 "${UNI[@]}"); Linux: $(values_col 2 "${LIN[@]}"); RR p99 us unikernel: $(values_col 3 "${UNI[@]}"); Linux: $(values_col 3 "${LIN[@]}")."
    echo "- each run: TCP sender -> discard sink of $BYTES seeded bytes with the SHA-256 checked at the sink, then UDP RR: 100 untimed + $COUNT timed one-at-a-time $SIZE-byte exchanges with an echo server; nearest-rank median and p99. Times are each guest's own clock: the Linux VMs' clocksource $CLOCK_LINUX; the unikernels' $CLOCK_UNI (host: $(awk -F': ' '/^cpu MHz/ {print $2 " MHz"; exit}' /proc/cpuinfo))."
    echo "- every guest: qemu-system-x86_64 ${QEMU_MACHINE[*]} (QEMU $QEMU_VER). Linux VMs: Debian kernel $DVM_KVER, busybox initramfs, ibguest-bench's Linux peer (tcp-send, tcp-sink, udp-rr, udp-echo), virtio-net-pci joined by -netdev socket over 127.0.0.1 (no vnet header, so no TSO/checksum offload to QEMU), eth0 MTU $MTU. Unikernels: the PVH image's send=/rr= clients against its discard/echo services, ivshmem-doorbell to ib-backend --provider sim, IPoIB MTU 2044."
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT, $(nproc) CPUs ($CPU), load average $LOAD_BEFORE before and $LOAD_AFTER after; took $ELAPSED s."
} | tee "$OUT/table.md"
