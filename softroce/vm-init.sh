#!/bin/busybox sh
# /init of the soft-RoCE VM (packed by softroce/softroce.sh).
#
# Brings up soft-RoCE (rxe0 on eth0), prints the device list, then runs the
# steps that the kernel command line's `softroce=MODE` asks for:
#   single  step a (the rdma provider's tests on rxe0), step b (ib-backend
#           on rxe0 with two hosted guests: ARP, ping, 4 MiB TCP + SHA-256)
#           and step e (softroce.cycles kill/reconnect cycles of a hosted
#           guest; the worker's fds, QPs, MRs, CQs and RSS stay flat)
#   serve   step c, first VM: back end + hosted guest 10.77.0.1 serving, until
#           the other VM's TCP data arrived
#   client  step c, second VM: back end + hosted guest 10.77.0.2 pinging and
#           sending to 10.77.0.1 across the wire
#   unikernel  step d: the PVH guest image under QEMU (TCG) inside this VM,
#           its back end on rxe0, talking to a hosted guest
# Every result is one console line `SOFTROCE-STEP <id> PASS|FAIL <detail>`;
# the host parses them. The VM powers off at the end (or on a fatal error).
#
# No `set -e`/`set -u` here, on purpose: this is PID 1, and a shell that exits
# panics the kernel. Every command that matters is checked and turns into a
# FAIL line instead; each wait and each client has its own timeout.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin
export HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /dev/shm
mount -t tmpfs tmp /tmp
mount -t tmpfs shm /dev/shm

arg() { # the value of NAME=... on the kernel command line
    # shellcheck disable=SC2013 # the command line is words
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1"=*) echo "${w#*=}"; return;; esac
    done
}
MODE=$(arg softroce)
result() { # id PASS|FAIL detail...
    echo "SOFTROCE-STEP $*"
}
finish() {
    echo "SOFTROCE-DONE"
    sync
    poweroff -f
}
fatal() {
    result "$1" FAIL "$2"
    finish
}
# wait_for FILE PATTERN TENTHS: grep -q PATTERN FILE within TENTHS * 0.1 s
wait_for() {
    i=0
    while [ "$i" -lt "$3" ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
wait_sock() {
    i=0
    while [ "$i" -lt "$2" ]; do
        [ -S "$1" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
show() { # file: the file's lines, indented
    sed 's/^/    | /' "$1"
}

# --- soft-RoCE ---------------------------------------------------------------
# shellcheck disable=SC2013 # one module name a line
for m in $(cat /lib/modules.order); do
    insmod "/lib/mod/$m.ko" || fatal rxe "insmod $m failed"
done
ip link set lo up
ip link set eth0 up
V4=$(arg softroce.ip)
[ -n "$V4" ] && ip addr add "$V4" dev eth0
rdma link add rxe0 type rxe netdev eth0 || fatal rxe "rdma link add rxe0 type rxe netdev eth0 failed"

# The IPv6 link-local GID shows up once eth0 has its address; the IP stack
# must have finished duplicate address detection (IFA_F_TENTATIVE, 0x40,
# cleared) before rxe can send from it.
i=0
while [ "$i" -lt 200 ]; do
    l=$(grep "^fe80.* eth0$" /proc/net/if_inet6)
    if [ -n "$l" ]; then
        f=$(echo "$l" | awk '{print $5}')
        [ $((0x$f & 0x40)) -eq 0 ] && break
    fi
    sleep 0.1
    i=$((i + 1))
done
GIDS=/sys/class/infiniband/rxe0/ports/1/gids
TYPES=/sys/class/infiniband/rxe0/ports/1/gid_attrs/types
V6_GID=""
V4_GID=""
n=0
while [ "$n" -lt 16 ]; do
    g=$(cat "$GIDS/$n" 2>/dev/null)
    t=$(cat "$TYPES/$n" 2>/dev/null)
    case "$g:$t" in
        fe80:*"RoCE v2") [ -z "$V6_GID" ] && V6_GID=$n ;;
        0000:0000:0000:0000:0000:ffff:*"RoCE v2") [ -z "$V4_GID" ] && V4_GID=$n ;;
    esac
    n=$((n + 1))
done

echo "=== device list"
echo "\$ rdma link"
rdma link
echo "\$ ibv_devices"
ibv_devices
echo "\$ ibv_devinfo -d rxe0"
ibv_devinfo -d rxe0 | grep -E "hca_id|transport|port:|state|max_mtu|active_mtu|link_layer"
echo "GID table (port 1):"
n=0
while [ "$n" -lt 16 ]; do
    g=$(cat "$GIDS/$n" 2>/dev/null)
    case "$g" in ""|0000:0000:0000:0000:0000:0000:0000:0000) ;; *) echo "  gid[$n] $g $(cat "$TYPES/$n")" ;; esac
    n=$((n + 1))
done
if rdma link show rxe0/1 | grep -q "state ACTIVE" && [ -n "$V6_GID" ]; then
    result rxe PASS "rxe0 port 1 ACTIVE on eth0, IPv6 link-local GID index $V6_GID (RoCE v2)"
else
    fatal rxe "rxe0 port 1 not ACTIVE or no IPv6 link-local RoCE v2 GID"
fi

# --- the steps ---------------------------------------------------------------

# step a: the rdma provider's own tests on rxe0, on the IPv6 GID (where
# multicast delivery is checked) and on the IPv4-mapped GID.
step_a() {
    ok=1
    paths=""
    # Every test the executable has must pass (none filtered or skipped).
    want=$(/bin/rdma_provider --list 2>/dev/null | grep -c ': test$')
    [ "${want:-0}" -gt 0 ] || ok=0
    for g in $V6_GID $V4_GID; do
        echo "=== step a: rdma_provider tests, IBGUEST_RDMA_DEVICE=rxe0 IBGUEST_RDMA_PORT=1 IBGUEST_RDMA_GID_INDEX=$g"
        if ! IBGUEST_RDMA_DEVICE=rxe0 IBGUEST_RDMA_PORT=1 IBGUEST_RDMA_GID_INDEX=$g \
            timeout 120 /bin/rdma_provider --test-threads=1 >/tmp/a.log 2>&1; then
            ok=0
        fi
        show /tmp/a.log
        grep -q "SKIPPED" /tmp/a.log && ok=0
        grep -q "test result: ok. $want passed; 0 failed" /tmp/a.log || ok=0
        # Paths resolved through rdma_cm (each port's count, from the
        # tests' CM-PATHS lines).
        # (libtest may print one after "test NAME ... " on the same line.)
        paths="$paths GID $g: $(awk '/CM-PATHS / { for (i = 1; i <= NF; i++) if ($i ~ /^(resolved|unreachable)=[0-9]+$/) { split($i, kv, "="); n[kv[1]] += kv[2] } }
            END { printf "%d resolved, %d unreachable", n["resolved"], n["unreachable"] }' /tmp/a.log);"
    done
    paths=${paths%;}
    if [ "$ok" = 1 ]; then
        result a PASS "rdma provider tests on rxe0: all passed on GID index $V6_GID (IPv6) and ${V4_GID:-none} (IPv4); paths through rdma_cm:$paths"
    else
        result a FAIL "rdma provider tests on rxe0 (see the test output above)"
    fi
}

# Starts ib-backend on rxe0 with the seats in $GUESTS, sockets in DIR, and
# any further `run` options given after DIR (e.g. --workers 1). A seat is
# NAME or NAME,OPTIONS (more --guest keys, e.g. g3,pkey=0x8001).
# How many paths the back end resolved through rdma_cm (its log lines).
cm_paths() { # backend.log
    echo "$(grep -c "through rdma_cm: port" "$1") paths through rdma_cm"
}

BACKEND_PID=""
start_backend() { # dir [run options...]
    d=$1
    shift
    for s in $GUESTS; do set -- "$@" --guest "name=${s%%,*},socket=$d/${s%%,*}.sock${s#"${s%%,*}"}"; done
    ib-backend run --provider rdma --rdma-device rxe0 --rdma-port 1 \
        --rdma-gid-index "$V6_GID" --control "$d/control.sock" "$@" \
        >"$d/backend.log" 2>&1 &
    BACKEND_PID=$!
    for s in $GUESTS; do wait_sock "$d/${s%%,*}.sock" 100 || return 1; done
    wait_sock "$d/control.sock" 100
}
stop_backend() {
    [ -n "$BACKEND_PID" ] && kill "$BACKEND_PID" 2>/dev/null
    wait "$BACKEND_PID" 2>/dev/null
    BACKEND_PID=""
}
hosted() { # socket ip args...: a hosted guest
    s=$1
    a=$2
    shift 2
    ibguest-hosted --socket "$s" --ip "$a" "$@"
}
# check_transfer SENDLOG RECVLOG BYTES TENTHS: the discard service saw the
# bytes that were sent, with the same SHA-256.
check_transfer() {
    sum=$(sed -n "s/^sent $3 bytes sha256 \([0-9a-f]*\) .*/\1/p" "$1")
    [ -n "$sum" ] || return 1
    wait_for "$2" "discard from .*: $3 bytes sha256 $sum" "$4" || return 1
    grep "discard from" "$2"
}

# step b-pkey (inside step b): seat g3 has P_Key 0x8001, which rxe0's P_Key
# table (only 0xffff) does not hold. A guest attaching there must be refused
# with a message naming the P_Key and the port, never put in another
# partition; g1 and g2 go on working (the rest of step b runs after it).
step_b_pkey() {
    d=$1
    echo "\$ ibguest-hosted --socket g3 --ip 10.77.0.3/24 ping 10.77.0.2   (seat g3: pkey=0x8001)"
    timeout 15 ibguest-hosted --socket "$d/g3.sock" --ip 10.77.0.3/24 ping 10.77.0.2 >"$d/g3.log" 2>&1 &&
        echo "    | (g3's ping succeeded)"
    show "$d/g3.log"
    want="P_Key 0x8001 is not in the P_Key table of rxe0 port 1"
    if wait_for "$d/backend.log" "guest g3: cannot open an rdma port: $want" 50; then
        line=$(grep -m1 "$want" "$d/backend.log" | sed 's/.*\(guest g3: cannot open\)/\1/' | cut -c1-120)
        result b-pkey PASS "seat g3 (P_Key 0x8001, not in rxe0's table) refused: $line..."
    else
        show "$d/backend.log"
        result b-pkey FAIL "seat g3 (P_Key 0x8001) was not refused with a message naming the P_Key and rxe0 port 1"
    fi
}

# step b: one back end on rxe0, two hosted guests (and the refused seat g3).
step_b() {
    d=/tmp/b
    mkdir -p "$d"
    # g1 and g2 have port security on (ip=): each send's first 64 bytes are
    # checked and posted from the back end's header arena (a 2-entry
    # gather list on rxe), the rest zero copy from the guest's slot.
    GUESTS="g1,ip=10.77.0.1 g2,ip=10.77.0.2 g3,pkey=0x8001"
    echo "=== step b: ib-backend --provider rdma --rdma-device rxe0 --rdma-port 1 --rdma-gid-index $V6_GID, guests g1 (10.77.0.1) and g2 (10.77.0.2), port security on"
    if ! start_backend "$d"; then
        show "$d/backend.log"
        result b FAIL "ib-backend did not come up"
        stop_backend
        return
    fi
    hosted "$d/g2.sock" 10.77.0.2/24 serve >"$d/g2.log" 2>&1 &
    g2=$!
    fail=""
    wait_for "$d/g2.log" "up, hw" 100 || fail="guest g2 did not come up"
    [ -n "$fail" ] || step_b_pkey "$d"
    if [ -z "$fail" ]; then
        echo "\$ ibguest-hosted --socket g1 --ip 10.77.0.1/24 ping 10.77.0.2"
        timeout 60 ibguest-hosted --socket "$d/g1.sock" --ip 10.77.0.1/24 ping 10.77.0.2 >"$d/ping.log" 2>&1 ||
            fail="ping 10.77.0.2 failed"
        show "$d/ping.log"
    fi
    if [ -z "$fail" ]; then
        echo "\$ ibguest-hosted --socket g1 --ip 10.77.0.1/24 send 10.77.0.2:9 4194304"
        timeout 300 ibguest-hosted --socket "$d/g1.sock" --ip 10.77.0.1/24 send 10.77.0.2:9 4194304 >"$d/send.log" 2>&1 ||
            fail="send of 4 MiB failed"
        show "$d/send.log"
    fi
    if [ -z "$fail" ]; then
        echo "g2 (discard service on port 9):"
        check_transfer "$d/send.log" "$d/g2.log" 4194304 100 | sed 's/^/    | /' ||
            fail="g2's discard service did not report the 4 MiB with the sent SHA-256"
    fi
    echo "\$ ib-backend stats"
    ib-backend stats --control "$d/control.sock" >"$d/stats.txt" 2>&1
    show "$d/stats.txt"
    if [ -z "$fail" ] && ! grep -q "^total .* tx_errors=0 .* violations=0 " "$d/stats.txt"; then
        fail="ib-backend stats show tx errors or violations"
    fi
    # Honest guests: nothing filtered.
    if [ -z "$fail" ] && ! grep -q "^total .* tx_filtered=0" "$d/stats.txt"; then
        fail="ib-backend filtered an honest guest's packets (tx_filtered)"
    fi
    kill $g2 2>/dev/null
    wait $g2 2>/dev/null
    stop_backend
    echo "back end log:"
    show "$d/backend.log"
    if [ -n "$fail" ]; then
        echo "g2 log:"
        show "$d/g2.log"
        result b FAIL "$fail"
    else
        result b PASS "ib-backend on rxe0 (GID $V6_GID), port security on: ARP + ping 10.77.0.1 -> 10.77.0.2, 4 MiB TCP with matching SHA-256, no tx errors (a filtered seat's send that cannot go with its checked head is one), violations or filtered packets; $(cm_paths "$d/backend.log")"
    fi
}

# step c, first VM: serve until the other VM's data has arrived.
step_c_serve() {
    d=/tmp/c
    mkdir -p "$d"
    # s2 takes connected mode (RC QPs set up with librdmacm) when a guest
    # asks for it: up to 4 connections.
    GUESTS="s1 s2,max-rc-conns=4"
    echo "=== step c (serve): ib-backend on rxe0 (GID $V6_GID), hosted guests 10.77.0.1 (datagram mode) and 10.77.0.11 (connected mode) serving"
    start_backend "$d" || { show "$d/backend.log"; fatal c-serve "ib-backend did not come up"; }
    hosted "$d/s1.sock" 10.77.0.1/24 serve >"$d/s1.log" 2>&1 &
    s1=$!
    ibguest-hosted --socket "$d/s2.sock" --net "ip=10.77.0.11/24 cm=on" serve >"$d/s2.log" 2>&1 &
    s2=$!
    wait_for "$d/s1.log" "up, hw" 100 || { show "$d/s1.log"; fatal c-serve "the hosted guest did not come up"; }
    wait_for "$d/s2.log" "up, hw" 100 || { show "$d/s2.log"; fatal c-serve "the connected-mode guest did not come up"; }
    echo "SOFTROCE-READY"
    fail=""
    wait_for "$d/s1.log" "discard from .*: $C_BYTES bytes sha256" 2400 ||
        fail="no TCP data from the other VM within 240 s"
    echo "s1 (discard service on port 9):"
    grep "discard from" "$d/s1.log" | sed 's/^/    | /'
    cm_fail=""
    wait_for "$d/s2.log" "discard from .*: $CM_BYTES bytes sha256" 1200 ||
        cm_fail="no connected-mode TCP data from the other VM within 120 s"
    echo "s2 (connected mode; discard service on port 9):"
    grep "discard from\|connected mode" "$d/s2.log" | sed 's/^/    | /'
    echo "\$ ib-backend stats"
    ib-backend stats --control "$d/control.sock" 2>&1 | sed 's/^/    | /'
    kill $s1 $s2 2>/dev/null
    wait $s1 $s2 2>/dev/null
    stop_backend
    echo "back end log:"
    show "$d/backend.log"
    if [ -n "$fail" ]; then
        show "$d/s1.log"
        result c-serve FAIL "$fail"
    else
        result c-serve PASS "$(grep -m1 "discard from" "$d/s1.log"); $(cm_paths "$d/backend.log")"
    fi
    if [ -n "$cm_fail" ]; then
        show "$d/s2.log"
        result c-cm-serve FAIL "$cm_fail"
    else
        result c-cm-serve PASS "connected mode: $(grep -m1 "discard from" "$d/s2.log")"
    fi
}

# step c, second VM: ping and send across the wire.
step_c_client() {
    d=/tmp/c
    mkdir -p "$d"
    GUESTS="c1 c2,max-rc-conns=4"
    echo "=== step c (client): ib-backend on rxe0 (GID $V6_GID), hosted guests 10.77.0.2 -> 10.77.0.1 (datagram mode) and 10.77.0.12 -> 10.77.0.11 (connected mode) in the other VM"
    start_backend "$d" || { show "$d/backend.log"; fatal c-client "ib-backend did not come up"; }
    fail=""
    echo "\$ ibguest-hosted --socket c1 --ip 10.77.0.2/24 ping 10.77.0.1"
    timeout 60 ibguest-hosted --socket "$d/c1.sock" --ip 10.77.0.2/24 ping 10.77.0.1 >"$d/ping.log" 2>&1 || fail="ping 10.77.0.1 failed"
    show "$d/ping.log"
    if [ -z "$fail" ]; then
        echo "\$ ibguest-hosted --socket c1 --ip 10.77.0.2/24 send 10.77.0.1:9 $C_BYTES"
        timeout 120 ibguest-hosted --socket "$d/c1.sock" --ip 10.77.0.2/24 send 10.77.0.1:9 "$C_BYTES" >"$d/send.log" 2>&1 ||
            fail="send to 10.77.0.1:9 failed"
        show "$d/send.log"
    fi
    # Connected mode: an RC connection (librdmacm) between c2 and s2 carries
    # the TCP stream; the host's capture check looks for its RC opcodes.
    cm_fail=""
    echo "\$ ibguest-hosted --socket c2 --net 'ip=10.77.0.12/24 cm=on' send 10.77.0.11:9 $CM_BYTES"
    timeout 120 ibguest-hosted --socket "$d/c2.sock" --net "ip=10.77.0.12/24 cm=on" send 10.77.0.11:9 "$CM_BYTES" >"$d/cm.log" 2>&1 ||
        cm_fail="connected-mode send to 10.77.0.11:9 failed"
    show "$d/cm.log"
    rc_bytes=$(sed -n 's/^connected mode: [0-9]* packets, \([0-9]*\) bytes sent over RC.*/\1/p' "$d/cm.log")
    # RC carries the IP packets (headers too); only what was sent while the
    # connection came up may have gone over UD.
    if [ -z "$cm_fail" ] && [ "${rc_bytes:-0}" -lt $((CM_BYTES * 9 / 10)) ]; then
        cm_fail="only ${rc_bytes:-0} bytes went over RC (want at least 90 % of $CM_BYTES)"
    fi
    echo "\$ ib-backend stats"
    ib-backend stats --control "$d/control.sock" 2>&1 | sed 's/^/    | /'
    stop_backend
    echo "back end log:"
    show "$d/backend.log"
    if [ -n "$fail" ]; then
        result c-client FAIL "$fail"
    else
        result c-client PASS "$(grep -m1 "^sent" "$d/send.log"); $(cm_paths "$d/backend.log")"
    fi
    if [ -n "$cm_fail" ]; then
        result c-cm-client FAIL "$cm_fail"
    else
        result c-cm-client PASS "$(grep -m1 "^sent" "$d/cm.log"); $(grep -m1 "^connected mode" "$d/cm.log")"
    fi
}

# step d (reach): the PVH unikernel under QEMU inside this VM, attached to
# ib-backend on rxe0; a hosted guest serves it.
step_d() {
    d=/tmp/d
    mkdir -p "$d"
    GUESTS="u1 h2"
    echo "=== step d: the unikernel (QEMU TCG inside this VM) on ib-backend over rxe0 (GID $V6_GID)"
    start_backend "$d" || { show "$d/backend.log"; fatal d "ib-backend did not come up"; }
    hosted "$d/h2.sock" 10.77.0.2/24 serve >"$d/h2.log" 2>&1 &
    h2=$!
    fail=""
    wait_for "$d/h2.log" "up, hw" 100 || fail="the hosted guest did not come up"
    if [ -z "$fail" ]; then
        t0=$(date +%s)
        timeout 600 qemu-system-x86_64 -accel tcg -machine q35 -m 64M -smp 1 \
            -display none -vga none -serial stdio -monitor none -no-reboot -nic none \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
            -chardev "socket,path=$d/u1.sock,id=ib" -device ivshmem-doorbell,chardev=ib,vectors=1 \
            -kernel /guest.elf \
            -append "ip=10.77.0.3/24 name=u1 peer=10.77.0.2 send=10.77.0.2:9:$D_BYTES exit-after=$D_SECONDS" \
            </dev/null >"$d/u1.log" 2>&1
        rc=$?
        t1=$(date +%s)
        show "$d/u1.log"
        echo "unikernel QEMU exited with $rc after $((t1 - t0)) s"
        grep -q "peer 10.77.0.2 answered" "$d/u1.log" || fail="the unikernel's ping of 10.77.0.2 was not answered"
        # isa-debug-exit: the guest's success code 0x10 is QEMU status 33.
        [ -z "$fail" ] && [ "$rc" != 33 ] && fail="the unikernel did not exit with success (QEMU status $rc, want 33)"
        if [ -z "$fail" ]; then
            sum=$(sed -n "s/.*sent $D_BYTES bytes sha256 \([0-9a-f]*\) .*/\1/p" "$d/u1.log")
            if [ -z "$sum" ] || ! wait_for "$d/h2.log" "discard from .*: $D_BYTES bytes sha256 $sum" 100; then
                fail="the unikernel's TCP data did not arrive with the sent SHA-256"
            fi
        fi
    fi
    echo "h2 (discard service on port 9):"
    grep "discard from" "$d/h2.log" | sed 's/^/    | /'
    echo "\$ ib-backend stats"
    ib-backend stats --control "$d/control.sock" 2>&1 | sed 's/^/    | /'
    kill $h2 2>/dev/null
    wait $h2 2>/dev/null
    stop_backend
    echo "back end log:"
    show "$d/backend.log"
    if [ -n "$fail" ]; then
        result d FAIL "$fail"
    else
        result d PASS "unikernel (QEMU TCG in the VM) on ib-backend over rxe0: ARP, ping, $D_BYTES bytes TCP to a hosted guest with matching SHA-256; $((t1 - t0)) s incl. exit-after=$D_SECONDS"
    fi
}

# --- step e: kill/reconnect cycles on rdma (issue 9's reliability figure) ---
# The rdma version of qemu-tests/tests/reconnect_soak.rs: one worker process
# on rxe0 with seats g1 and g2; g2 serves all along while a hosted guest on g1
# comes up and is killed with SIGKILL (no goodbye), E_CYCLES times. The
# worker's descriptors, its rdma resources (QPs, MRs, CQs) and its memory
# must be flat from the warm-up to the end, the worker never replaced, and a
# fresh guest on g1 must still reach g2.
E_WARM_UP=5

# stat_of FILE GUEST KEY: KEY's value on GUEST's line (or the `total` line)
# of `ib-backend stats` output in FILE.
stat_of() {
    sed -n "s/^$2 .* $3=\([0-9]*\).*/\1/p" "$1" | head -1
}
# e_stats: `ib-backend stats` of step e's back end into $d/stats.txt.
e_stats() {
    ib-backend stats --control "$d/control.sock" >"$d/stats.txt" 2>&1
}
# rdma_held TYPE PID: how many rdma resources of TYPE (qp, mr, cq) process
# PID holds. `rdma resource show TYPE` prints one line per object; a user
# object ends in `pid TID comm NAME`, where TID is the thread that created it
# (the worker's `worker-0` thread, not the process id); kernel objects (rxe's
# own GSI QP 1) have no pid. So: the lines whose pid is one of PID's threads.
rdma_held() {
    # shellcheck disable=SC2012 # thread ids are numbers
    tids=$(ls "/proc/$2/task" 2>/dev/null | tr '\n' '|')
    rdma resource show "$1" 2>/dev/null | grep -cE " pid (${tids%|})( |\$)"
}
# footprint PID: "FDS RSS_KIB QPS MRS CQS" of process PID.
footprint() {
    # shellcheck disable=SC2012 # counting entries, not parsing names
    fds=$(ls "/proc/$1/fd" 2>/dev/null | wc -l)
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null)
    echo "$fds ${rss:-0} $(rdma_held qp "$1") $(rdma_held mr "$1") $(rdma_held cq "$1")"
}
# rdma_show: the device's resource summary and every QP, MR and CQ.
rdma_show() {
    for t in "" qp mr cq; do
        echo "\$ rdma resource show $t"
        # shellcheck disable=SC2086 # no type: the summary
        rdma resource show $t 2>&1 | sed 's/^/    | /'
    done
}
# uptime in tenths of a second (busybox date has no %N)
tenths() {
    awk '{printf "%d\n", $1 * 10}' /proc/uptime
}
# wait_disconnects N: until `ib-backend stats` counts N disconnects for g1,
# at most 20 s (one stats call alone takes about 0.2 s under TCG).
wait_disconnects() {
    until=$(($(tenths) + 200))
    while :; do
        e_stats
        [ "$(stat_of "$d/stats.txt" "guest g1" disconnects)" = "$1" ] && return 0
        [ "$(tenths)" -lt "$until" ] || return 1
        sleep 0.1
    done
}

step_e() {
    d=/tmp/e
    mkdir -p "$d"
    GUESTS="g1 g2"
    echo "=== step e: $E_CYCLES kill/reconnect cycles of a hosted guest on seat g1, ib-backend on rxe0 (GID $V6_GID) with --workers 1"
    if ! start_backend "$d" --workers 1; then
        show "$d/backend.log"
        result e FAIL "ib-backend did not come up"
        stop_backend
        return
    fi
    fail=""
    figures=""
    e_stats
    # The first line is `backend provider=rdma epoch=N guests=2 worker_pid=PID`.
    wp=$(sed -n '1s/.* worker_pid=\([0-9]*\).*/\1/p' "$d/stats.txt")
    [ -n "$wp" ] || fail="no worker_pid in ib-backend stats"
    if [ -z "$fail" ]; then
        # Started directly, not through hosted(): $! must be ibguest-hosted
        # itself, not a subshell, for kill -9 to reach it.
        ibguest-hosted --socket "$d/g2.sock" --ip 10.77.0.2/24 serve >"$d/g2.log" 2>&1 &
        g2=$!
        wait_for "$d/g2.log" "joined broadcast group" 200 || fail="guest g2 did not join the broadcast group"
    fi
    warm=""
    t0=$(tenths)
    c=0
    while [ -z "$fail" ] && [ "$c" -lt "$E_CYCLES" ]; do
        c=$((c + 1))
        # A guest on g1 comes up: attached, its port open, and IPoIB has
        # joined the broadcast group (so the back end has attached its QP).
        # The log is emptied here first: the background shell truncates it
        # only when it gets to run, and the previous guest's line must not
        # satisfy the wait.
        : >"$d/g1.log"
        ibguest-hosted --socket "$d/g1.sock" --ip 10.77.0.1/24 serve >"$d/g1.log" 2>&1 &
        g1=$!
        if ! wait_for "$d/g1.log" "joined broadcast group" 300; then
            fail="cycle $c: the guest on g1 did not join the broadcast group"
            show "$d/g1.log"
            kill -9 "$g1" 2>/dev/null
            wait "$g1" 2>/dev/null
            break
        fi
        # Killed without a goodbye; the back end must notice the closed
        # socket and count one more disconnect for g1.
        kill -9 "$g1"
        wait "$g1" 2>/dev/null
        wait_disconnects "$c" || fail="cycle $c: the back end did not count g1's disconnect within 20 s"
        # The baseline: after the warm-up, when pools and caches have grown once.
        if [ -z "$fail" ] && [ "$c" -eq "$E_WARM_UP" ]; then
            warm=$(footprint "$wp")
            echo "after $c cycles: worker $wp fds RSS(KiB) QPs MRs CQs = $warm"
            rdma_show
            # g2's session alone holds a QP, so a count of 0 means the
            # resources were not found (the check would prove nothing).
            # shellcheck disable=SC2086 # five numbers
            set -- $warm
            [ "$3" -ge 1 ] || fail="no QP of the worker (pid $wp) in rdma resource show qp"
        fi
        [ $((c % 100)) -eq 0 ] && echo "step e: $c cycles, $(( ($(tenths) - t0) / 10 )) s"
    done
    t1=$(tenths)
    end=""
    if [ -z "$fail" ]; then
        # The same worker process all along, and the supervisor restarted
        # nothing.
        e_stats
        now=$(sed -n '1s/.* worker_pid=\([0-9]*\).*/\1/p' "$d/stats.txt")
        [ "$now" = "$wp" ] || fail="the worker was replaced (pid $wp, now ${now:-none})"
        r=$(stat_of "$d/stats.txt" total restarts)
        [ -z "$fail" ] && [ "$r" != 0 ] && fail="ib-backend stats count restarts=$r"
    fi
    if [ -z "$fail" ]; then
        # A fresh guest on g1 still reaches g2, which was up all along.
        echo "\$ ibguest-hosted --socket g1 --ip 10.77.0.1/24 ping 10.77.0.2 --count 3"
        timeout 60 ibguest-hosted --socket "$d/g1.sock" --ip 10.77.0.1/24 ping 10.77.0.2 --count 3 >"$d/ping.log" 2>&1
        show "$d/ping.log"
        grep -q "3 sent, 3 answered" "$d/ping.log" || fail="after $c cycles, a fresh guest on g1 did not get 3 of 3 pings to g2 answered"
    fi
    if [ -z "$fail" ]; then
        # The end footprint, once the ping's guest has gone too (its
        # disconnect counted: cycles + 1).
        wait_disconnects "$((c + 1))" || fail="the back end did not count the ping guest's disconnect within 20 s"
        end=$(footprint "$wp")
        [ -n "$warm" ] || warm=$end
        echo "after $c cycles and the ping: worker $wp fds RSS(KiB) QPs MRs CQs = $end"
        rdma_show
        # shellcheck disable=SC2086 # five numbers
        set -- $warm $end
        # flat: no more fds, QPs, MRs, CQs than after the warm-up; RSS within 4 MiB
        if [ "$6" -gt "$1" ] || [ "$8" -gt "$3" ] || [ "$9" -gt "$4" ] || [ "${10}" -gt "$5" ]; then
            fail="not flat over $c cycles"
        elif [ "$7" -gt $(($2 + 4096)) ]; then
            fail="the worker's RSS grew by more than 4 MiB over $c cycles"
        fi
        figures="fds $1->$6, QPs $3->$8, MRs $4->$9, CQs $5->${10}, RSS $2->$7 KiB"
    fi
    echo "\$ ib-backend stats"
    e_stats
    show "$d/stats.txt"
    kill "$g2" 2>/dev/null
    wait "$g2" 2>/dev/null
    stop_backend
    secs=$(( (t1 - t0) / 10 )).$(( (t1 - t0) % 10 ))
    if [ -n "$fail" ]; then
        echo "back end log (last 40 lines):"
        tail -40 "$d/backend.log" | sed 's/^/    | /'
        result e FAIL "$fail${figures:+ ($figures)}"
    else
        result e PASS "$c kill/reconnect cycles of g1 in $secs s, worker $wp never replaced, fresh g1 pings g2 3/3; worker (warm-up $E_WARM_UP -> end) $figures"
    fi
}

C_BYTES=$(arg softroce.bytes)
C_BYTES=${C_BYTES:-262144}
CM_BYTES=$(arg softroce.cmbytes)
CM_BYTES=${CM_BYTES:-2097152}
D_BYTES=$(arg softroce.dbytes)
D_BYTES=${D_BYTES:-1048576}
D_SECONDS=$(arg softroce.dseconds)
D_SECONDS=${D_SECONDS:-20}
E_CYCLES=$(arg softroce.cycles)
E_CYCLES=${E_CYCLES:-60}
case "$MODE" in
    single)
        STEPS=$(arg softroce.steps)
        case "${STEPS:-ab}" in *a*) step_a ;; esac
        case "${STEPS:-ab}" in *b*) step_b ;; esac
        case "${STEPS:-ab}" in *e*) step_e ;; esac
        ;;
    serve) step_c_serve ;;
    client) step_c_client ;;
    unikernel) step_d ;;
    *) fatal mode "unknown softroce=$MODE on the kernel command line" ;;
esac
finish
