#!/usr/bin/env bash
# make softroce: the rdma provider, ib-backend, hosted guests and the
# unikernel on a real libibverbs device, soft-RoCE (rxe0), inside QEMU (TCG)
# VMs built from Debian packages. See softroce/README.md.
#
# Steps (each prints `SOFTROCE-STEP <id> PASS|FAIL ...`, on a VM's console or
# here on the host):
#   rxe  soft-RoCE comes up in each VM; the device list shows rxe0
#   a    the rdma provider's own tests (verbs-shim/tests/rdma_provider.rs) on rxe0
#   b    ib-backend --provider rdma on rxe0 with two hosted guests: ARP, ping,
#        4 MiB TCP with matching SHA-256
#   c    two VMs joined by -netdev socket, a back end + hosted guest in each,
#        ping and TCP across real RoCEv2; the filter-dump capture must show
#        UD SEND only (BTH opcode 100) with a DETH Q_Key carrying ARP and IPv4
#   d    the PVH unikernel under QEMU inside the VM, its back end on rxe0
#   e    SOFTROCE_CYCLES (default 60) kill -9/reconnect cycles of a hosted
#        guest on ib-backend --provider rdma --workers 1: the worker's fds,
#        QPs, MRs, CQs and RSS are flat and it is never replaced (issue 9's
#        figure; SOFTROCE_CYCLES=1000 for the long run)
#
# SOFTROCE_STEPS picks steps (default abcde). Downloads, unpacked packages and
# the initramfs images are cached under target/softroce/; logs and the
# capture land there too. Exits non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/softroce
DL=$OUT/dl
LOGS=$OUT/logs
STEPS=${SOFTROCE_STEPS:-abcde}
case "$STEPS" in
    "" | *[!abcde]*)
        echo "softroce: SOFTROCE_STEPS=$STEPS: give letters from abcde" >&2
        exit 2
        ;;
esac
# Step e's kill/reconnect cycles. One cycle takes 0.4-0.7 s in the VM (TCG);
# the default keeps `make softroce` well within a minute of what it took
# without step e, SOFTROCE_CYCLES=1000 is issue 9's figure (about 7 min).
CYCLES=${SOFTROCE_CYCLES:-60}
case "$CYCLES" in
    "" | *[!0-9]* | 0)
        echo "softroce: SOFTROCE_CYCLES=$CYCLES: give a positive number" >&2
        exit 2
        ;;
esac
has() { case "$STEPS" in *"$1"*) return 0 ;; *) return 1 ;; esac }
T_START=$(date +%s)

say() { echo "softroce: $*"; }
die() {
    echo "softroce: error: $*" >&2
    exit 1
}
elapsed() { echo $(($(date +%s) - $1)); }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- host packages -------------------------------------------------------------
# qemu and tshark run here; ibverbs-providers, libibverbs1 and iproute2 hold
# the files copied into the VM (the rxe provider, libibverbs, `rdma`); qemu's
# files also go into the VM for step d.
need=()
for pkg in qemu-system-x86 tshark ibverbs-providers libibverbs1 iproute2 binutils gzip; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
APT_UPDATED=0
apt_update() {
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
}
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
    apt_update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo not found (install Rust first)"

# --- Debian packages for the VM (downloaded with apt-get download, not installed)
# The steps are shared with `make bench-vm`: scripts/debian-vm.sh.
mkdir -p "$DL" "$LOGS"
export DVM_DL=$DL DVM_PKG=$OUT/pkg DVM_SAY=say
# shellcheck source=scripts/debian-vm.sh
. scripts/debian-vm.sh

# The modules rdma_rxe needs, in load order; crc32_generic is a hidden
# dependency (without it: "rdma_rxe: failed to add eth0"). configfs ib_cm
# iw_cm rdma_cm rdma_ucm are librdmacm's (/dev/infiniband/rdma_cm), for
# connected mode.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover
net_failover virtio_net crc32_generic udp_tunnel ip6_udp_tunnel ib_core ib_uverbs configfs
ib_cm iw_cm rdma_cm rdma_ucm rdma_rxe"

# The kernel: the newest cached linux-image-*-amd64, else the one Debian's
# linux-image-amd64 depends on. Only vmlinuz and the modules are unpacked.
# shellcheck disable=SC2086 # a list of names
dvm_kernel $MODULES
dvm_busybox
dvm_unpack "$(dvm_fetch ibverbs-utils)" "$OUT/pkg/ibverbs-utils"
KDEB=$DVM_KDEB
KVER=$DVM_KVER
VMLINUZ=$DVM_VMLINUZ
BUSYBOX=$DVM_BUSYBOX
UTILS=$OUT/pkg/ibverbs-utils/usr/bin
[ -x "$UTILS/ibv_devinfo" ] || die "no ibv_devinfo in the ibverbs-utils package"
say "VM: kernel $KVER ($(basename "$KDEB")), busybox-static, ibverbs-utils"

# --- the project's binaries -------------------------------------------------------
say "building ib-backend, ibguest-hosted and the rdma provider tests (release)"
cargo build --release --quiet -p ib-backend -p ibguest-hosted
TESTBIN=$(cargo test --release --quiet -p verbs-shim --features rdma --test rdma_provider --no-run \
    --message-format=json | sed -n 's/.*"executable":"\([^"]*rdma_provider-[^"]*\)".*/\1/p' | tail -1)
[ -x "$TESTBIN" ] || die "cannot find the rdma_provider test executable"
GUEST_IMAGE=target/x86_64-unknown-none/release/guest
if has d; then
    say "building the unikernel image (release)"
    cargo build --release --quiet -p guest --target x86_64-unknown-none
fi

# --- the initramfs -----------------------------------------------------------------
RXE_PROVIDER=$(find /usr/lib/x86_64-linux-gnu/libibverbs -name 'librxe-rdmav*.so' 2>/dev/null | head -1)
RXE_DRIVER=/etc/libibverbs.d/rxe.driver
if [ -z "$RXE_PROVIDER" ] || [ ! -f "$RXE_DRIVER" ]; then
    die "no rxe provider (/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so, $RXE_DRIVER): is ibverbs-providers installed?"
fi
# Step d runs qemu-system-x86_64 inside the VM: the binary, its TCG module
# and the firmware a PVH boot on q35 reads.
QEMU_FILES=(/usr/bin/qemu-system-x86_64 /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so
    /usr/share/seabios/bios-256k.bin /usr/share/qemu/pvh.bin /usr/share/qemu/linuxboot_dma.bin
    /usr/share/qemu/kvmvapic.bin)

# build_initrd NAME EXTRA_FILES...: $OUT/NAME.cpio.gz, rebuilt only when one
# of its inputs changed (size or mtime). EXTRA_FILES keep their paths, except
# the guest image, which becomes /guest.elf.
build_initrd() {
    local name=$1 stamp root out sum f
    shift
    out=$OUT/$name.cpio.gz
    stamp=$OUT/$name.stamp
    sum=$(printf '%s\n' "$BUSYBOX" softroce/vm-init.sh softroce/softroce.sh scripts/debian-vm.sh target/release/ib-backend \
        target/release/ibguest-hosted "$TESTBIN" /usr/bin/rdma "$UTILS/ibv_devices" \
        "$UTILS/ibv_devinfo" "$RXE_PROVIDER" "$RXE_DRIVER" "$KDEB" "$@" |
        xargs stat -L -c '%n %s %Y' | sha256sum | cut -d' ' -f1)
    if [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
        say "initramfs $out is up to date ($(du -h "$out" | cut -f1))"
        return
    fi
    say "packing $out"
    root=$OUT/root-$name
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,lib/mod,etc/libibverbs.d,usr/lib/x86_64-linux-gnu/libibverbs}
    cp "$BUSYBOX" "$root/bin/busybox"
    cp softroce/vm-init.sh "$root/init"
    chmod 755 "$root/init"
    strip --strip-debug -o "$root/bin/ib-backend" target/release/ib-backend
    strip --strip-debug -o "$root/bin/ibguest-hosted" target/release/ibguest-hosted
    strip --strip-debug -o "$root/bin/rdma_provider" "$TESTBIN"
    cp /usr/bin/rdma "$UTILS/ibv_devices" "$UTILS/ibv_devinfo" "$root/bin/"
    cp "$RXE_PROVIDER" "$root$RXE_PROVIDER"
    cp "$RXE_DRIVER" "$root$RXE_DRIVER"
    dvm_copy_with_libs "$root" target/release/ib-backend target/release/ibguest-hosted "$TESTBIN" \
        /usr/bin/rdma "$UTILS/ibv_devices" "$UTILS/ibv_devinfo" "$RXE_PROVIDER" "$@"
    for f in "$@"; do
        case "$f" in
            "$GUEST_IMAGE") cp "$f" "$root/guest.elf" ;;
            *) mkdir -p "$root$(dirname "$f")" && cp -L "$f" "$root$f" ;;
        esac
    done
    # shellcheck disable=SC2086 # a list of names
    dvm_add_modules "$root" $MODULES
    dvm_pack "$root" "$out"
    echo "$sum" >"$stamp"
    rm -rf "$root"
    say "initramfs $out: $(du -h "$out" | cut -f1)"
}
build_initrd softroce
if has d; then
    build_initrd softroce-reach "$GUEST_IMAGE" "${QEMU_FILES[@]}"
fi
say "ready to boot after $(elapsed "$T_START") s"

# --- running VMs -------------------------------------------------------------------
# Every QEMU (and console tail) started here is in PIDS and is killed when this
# script exits, however it exits.
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
trap 'say "interrupted; stopping the VMs"; exit 130' INT TERM

# start_vm NAME MODE INITRD QEMU_ARGS...: boots a VM in the background with
# `softroce=MODE` (and $VM_APPEND) on its command line; its console goes to
# $LOGS/NAME.console and, prefixed with [NAME], to our output.
start_vm() {
    local name=$1 mode=$2 initrd=$3 pid con
    shift 3
    con=$LOGS/$name.console
    : >"$con"
    qemu-system-x86_64 -accel tcg -machine q35 -smp 2 -m 1G \
        -kernel "$VMLINUZ" -initrd "$initrd" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init softroce=$mode ${VM_APPEND:-}" \
        -display none -vga none -monitor none -serial "file:$con" -no-reboot "$@" \
        </dev/null >"$LOGS/$name.qemu.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    tail -n +1 -F -s 0.2 --pid="$pid" "$con" 2>/dev/null | sed -u "s/\r\$//; s/^/  [$name] /" &
    PIDS+=("$!")
    eval "PID_$name=$pid TAIL_$name=$!"
}
console() { tr -d '\r' <"$LOGS/$1.console"; }
# console_has NAME PATTERN: grep on the file itself, not `console | grep -q`,
# which under pipefail fails when grep quits before tr has written everything.
console_has() { grep -q -- "$2" "$LOGS/$1.console"; }
last_lines() {
    echo "  last console lines of VM $1 ($LOGS/$1.console):"
    console "$1" | tail -15 | sed 's/^/    /'
    if [ -s "$LOGS/$1.qemu.log" ]; then
        echo "  qemu said:"
        tail -5 "$LOGS/$1.qemu.log" | sed 's/^/    /'
    fi
}
# wait_vm NAME SECONDS: waits for the VM to power off, killing it at the
# deadline. Fails on a timeout or when the VM stopped without SOFTROCE-DONE.
wait_vm() {
    local name=$1 pid deadline
    pid=$(eval "echo \$PID_$name")
    deadline=$(($(date +%s) + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "VM $name did not finish within $2 s; killing it"
            kill "$pid" 2>/dev/null || true
            sleep 1
            kill -9 "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            last_lines "$name"
            return 1
        fi
        sleep 0.5
    done
    wait "$pid" 2>/dev/null || true
    # The console tail ends shortly after QEMU; let it print everything.
    wait "$(eval "echo \$TAIL_$name")" 2>/dev/null || true
    if ! console_has "$name" '^SOFTROCE-DONE'; then
        say "VM $name stopped before it finished"
        last_lines "$name"
        return 1
    fi
}
# wait_console NAME PATTERN SECONDS: waits until the VM's console shows PATTERN.
wait_console() {
    local name=$1 pid deadline
    pid=$(eval "echo \$PID_$name")
    deadline=$(($(date +%s) + $3))
    while ! console_has "$name" "$2"; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            say "VM $name did not print '$2' within $3 s"
            last_lines "$name"
            return 1
        fi
        sleep 0.5
    done
}

RESULTS=$OUT/results.txt
: >"$RESULTS"
record() { # ID PASS|FAIL DETAIL: a result decided here on the host
    echo "SOFTROCE-STEP $*" | tee -a "$RESULTS"
}
# collect NAME IDS...: the VM's results (as ID@NAME), and a FAIL for each
# expected ID it did not report.
collect() {
    local name=$1 id
    shift
    console "$name" | grep '^SOFTROCE-STEP ' |
        sed "s/^SOFTROCE-STEP \([^ ]*\)/SOFTROCE-STEP \1@$name/" >>"$RESULTS" || true
    for id in "$@"; do
        console_has "$name" "^SOFTROCE-STEP $id " ||
            echo "SOFTROCE-STEP $id@$name FAIL no result on the console (the VM stopped or timed out first; see $LOGS/$name.console)" >>"$RESULTS"
    done
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

# --- steps a, b and e: one VM -----------------------------------------------------------
if has a || has b || has e; then
    ids=(rxe)
    has a && ids+=(a)
    has b && ids+=(b b-pkey)
    has e && ids+=(e)
    echo
    say "=== VM 'single': soft-RoCE, then steps ${ids[*]:1}"
    t=$(date +%s)
    # eth0 gets slirp's IPv4 address too, so rxe0 also has an IPv4-mapped
    # GID for step a. restrict=on: nothing leaves the VM.
    VM_APPEND="softroce.steps=$STEPS softroce.ip=10.0.2.15/24 softroce.cycles=$CYCLES" \
        start_vm single single "$OUT/softroce.cpio.gz" \
        -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0
    # 300 s for steps a and b, and 5 s a cycle for step e (0.4-0.7 s each).
    limit=300
    has e && limit=$((limit + 5 * CYCLES))
    wait_vm single "$limit" || true
    collect single "${ids[@]}"
    say "VM 'single' took $(elapsed "$t") s"
fi

# The connected-mode half of step c's capture: the CM handshake (MADs to
# QP1) and the bulk data in RC SEND packets (BTH opcodes 0-5), not UD.
capture_rc() {
    [ -s "$PCAP" ] || return 0
    local RC='infiniband.bth.opcode <= 5' n_rc rc_bytes n_ack cm_tcp_ud first
    echo
    say "connected mode in the capture: the CM handshake (UD to QP 1), then RC frames:"
    ts -Y 'infiniband.bth.destqp == 1' -T fields -E separator=/t -e frame.number -e frame.time_relative \
        -e ipv6.src -e ipv6.dst -e _ws.col.Info |
        awk -F'\t' '{ printf "  %5s %7.3f  %s -> %s  UD to QP 1 | %s\n", $1, $2, $3, $4, $5 }' | awk 'NR <= 8'
    first=$(ts -Y "$RC" -T fields -e frame.number | head -1)
    if [ -n "$first" ]; then
        ts -Y "$RC || infiniband.bth.opcode == 17" -T fields -E separator=/t -e frame.number \
            -e frame.time_relative -e ipv6.src -e ipv6.dst -e infiniband.bth.opcode -e infiniband.bth.destqp \
            -e infiniband.bth.psn -e udp.length |
            awk -F'\t' '{ n = ($5 == 17) ? "RC ACK" : ($5 == 0 ? "RC SEND first" : ($5 == 1 ? "RC SEND middle" : ($5 == 2 ? "RC SEND last" : "RC SEND only")));
                          printf "  %5s %7.3f  %s -> %s  %s (%s)  dest QP %s  PSN %s  UDP length %s\n", $1, $2, $3, $4, $5, n, $6, $7, $8 }' | awk 'NR <= 8'
    fi
    n_rc=$(count "$RC")
    # RC payload: the UDP length less the UDP header (8), BTH (12) and ICRC (4).
    rc_bytes=$(ts -Y "$RC" -T fields -e udp.length | awk '{ s += $1 - 24 } END { print s + 0 }')
    n_ack=$(count 'infiniband.bth.opcode == 17')
    cm_tcp_ud=$(count "$UD && ip.addr == 10.77.0.11 && tcp && tcp.len > 0")
    detail="$n_rc RC SEND frames (BTH opcodes 0-5) carrying $rc_bytes bytes, $n_ack RC ACKs; $cm_tcp_ud UD frames with TCP data between the connected-mode guests"
    if [ "$rc_bytes" -ge "$CM_BYTES" ] && [ "$cm_tcp_ud" -le 2 ]; then
        record c-cm-capture@host PASS "$detail"
    else
        record c-cm-capture@host FAIL "$detail (want RC frames carrying at least $CM_BYTES bytes, and the TCP data not on UD)"
    fi
}

# --- step c: two VMs joined by -netdev socket; 'serve' listens and captures ----------
if has c; then
    C_BYTES=262144
    PCAP=$OUT/roce.pcap
    rm -f "$PCAP"
    port=$(free_port)
    echo
    say "=== VMs 'serve' + 'client': step c, RoCEv2 between two VMs over -netdev socket (127.0.0.1:$port)"
    t=$(date +%s)
    VM_APPEND="softroce.bytes=$C_BYTES" start_vm serve serve "$OUT/softroce.cpio.gz" \
        -netdev "socket,id=n0,listen=127.0.0.1:$port" \
        -device virtio-net-pci,netdev=n0,mac=52:54:00:52:0c:01 \
        -object "filter-dump,id=d0,netdev=n0,file=$PCAP"
    : >"$LOGS/client.console"
    serve_wait=0
    if wait_console serve '^SOFTROCE-READY' 180; then
        VM_APPEND="softroce.bytes=$C_BYTES" start_vm client client "$OUT/softroce.cpio.gz" \
            -netdev "socket,id=n0,connect=127.0.0.1:$port" \
            -device virtio-net-pci,netdev=n0,mac=52:54:00:52:0c:02
        wait_vm client 240 || true
        # The server has its data once the client is done; it only has to
        # report and power off.
        serve_wait=60
    fi
    collect client rxe c-client c-cm-client
    wait_vm serve "$serve_wait" || true
    collect serve rxe c-serve c-cm-serve

    # The bytes the client sent are the bytes the server's discard service got.
    sent=$(console client | sed -n "s/.*sent $C_BYTES bytes sha256 \([0-9a-f]*\) .*/\1/p" | tail -1)
    got=$(console serve | sed -n "s/.*discard from .*: $C_BYTES bytes sha256 \([0-9a-f]*\).*/\1/p" | tail -1)
    if [ -n "$sent" ] && [ "$sent" = "$got" ]; then
        record c-sha256@host PASS "VM client sent $C_BYTES bytes, VM serve received them, SHA-256 $sent on both"
    else
        record c-sha256@host FAIL "SHA-256 sent '${sent:-none}' != received '${got:-none}'"
    fi
    CM_BYTES=2097152
    sent=$(console client | sed -n "s/.*sent $CM_BYTES bytes sha256 \([0-9a-f]*\) .*/\1/p" | tail -1)
    got=$(console serve | sed -n "s/.*discard from .*: $CM_BYTES bytes sha256 \([0-9a-f]*\).*/\1/p" | tail -1)
    if [ -n "$sent" ] && [ "$sent" = "$got" ]; then
        record c-cm-sha256@host PASS "connected mode: VM client sent $CM_BYTES bytes, VM serve received them, SHA-256 $sent on both"
    else
        record c-cm-sha256@host FAIL "connected mode: SHA-256 sent '${sent:-none}' != received '${got:-none}'"
    fi

    # The capture: UD SEND only (BTH opcode 100) with a DETH Q_Key, carrying
    # IPoIB ARP and IPv4.
    UD='infiniband.bth.opcode == 100 && infiniband.deth.q_key'
    ts() { tshark -r "$PCAP" "$@" 2>/dev/null || true; }
    count() { ts -Y "$1" -T fields -e frame.number | wc -l; }
    echo
    say "tshark summary of the RoCEv2 capture ($PCAP):"
    if [ -s "$PCAP" ]; then
        echo "  frame  time  RoCEv2 (UDP 4791) IPv6 src -> dst  BTH opcode  dest QP  DETH Q_Key  src QP | IPoIB payload"
        ts -Y "$UD" -T fields -E separator=/t -e frame.number -e frame.time_relative -e ipv6.src -e ipv6.dst \
            -e infiniband.bth.opcode -e infiniband.bth.destqp -e infiniband.deth.q_key \
            -e infiniband.deth.srcqp -e _ws.col.Protocol -e _ws.col.Info |
            awk -F'\t' '{ printf "  %5s %7.3f  %s -> %s  %s (UD SEND only)  %s  %s  %s | %s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' \
                >"$OUT/roce-summary.txt"
        head -24 "$OUT/roce-summary.txt"
        more=$(($(wc -l <"$OUT/roce-summary.txt") - 24))
        [ "$more" -le 0 ] || echo "  ... and $more more UD SEND frames (all in $OUT/roce-summary.txt)"
        first_arp=$(ts -Y "$UD && arp" -T fields -e frame.number | head -1)
        if [ -n "$first_arp" ]; then
            echo "  frame $first_arp decoded (tshark -O infiniband,arp):"
            ts -Y "frame.number == $first_arp" -O infiniband,arp |
                grep -E "^(Ethernet|Internet|User)|Opcode|Partition Key|Destination Queue Pair|Queue Key|Source Queue Pair|Ethertype|Hardware type|Sender (hardware|IP)|Target IP" |
                sed 's/^ */    /' || true
        fi
        n_all=$(ts -T fields -e frame.number | wc -l)
        n_ud=$(count "$UD")
        n_arp=$(count "$UD && arp")
        n_ip=$(count "$UD && ip")
        n_icmp=$(count "$UD && icmp")
        n_tcp=$(count "$UD && tcp")
        qkeys=$(ts -Y "$UD" -T fields -e infiniband.deth.q_key | sort -u | tr '\n' ' ')
        detail="$n_all frames; $n_ud UD SEND only (BTH opcode 100) with DETH Q_Key ${qkeys% }: $n_arp IPoIB ARP, $n_ip IPv4 ($n_icmp ICMP, $n_tcp TCP)"
        if [ "$n_ud" -gt 0 ] && [ "$n_arp" -gt 0 ] && [ "$n_ip" -gt 0 ] && [ "$n_icmp" -gt 0 ] && [ "$n_tcp" -gt 0 ]; then
            record c-capture@host PASS "$detail"
        else
            record c-capture@host FAIL "$detail (want UD SEND only frames with ARP, ICMP and TCP)"
        fi
    else
        record c-capture@host FAIL "no capture at $PCAP"
    fi
    capture_rc
    say "step c took $(elapsed "$t") s"
fi

# --- step d: the unikernel under QEMU inside the soft-RoCE VM ---------------------------
if has d; then
    echo
    say "=== VM 'unikernel': step d, the PVH guest under QEMU (TCG) inside the VM, its back end on rxe0"
    t=$(date +%s)
    start_vm unikernel unikernel "$OUT/softroce-reach.cpio.gz" \
        -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0
    wait_vm unikernel 300 || true
    collect unikernel rxe d
    say "step d took $(elapsed "$t") s"
fi
cleanup

# --- summary -----------------------------------------------------------------------------
echo
say "summary (device list and step output above; consoles in $LOGS/)"
pass=0
fail=0
failed=()
while read -r _ id verdict detail; do
    printf '  %-18s %s  %s\n' "$id" "$verdict" "$detail"
    if [ "$verdict" = PASS ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed+=("$id")
    fi
done <"$RESULTS"
say "$pass passed, $fail failed"
say "took $(elapsed "$T_START") s"
if [ "$fail" -gt 0 ] || [ "$pass" -eq 0 ]; then
    say "FAILED: ${failed[*]:-no step ran}"
    exit 1
fi
