# shellcheck shell=sh
# shellcheck disable=SC2154 # _ip, _id and friends are set by eval
# The xen-test scenario on real verbs (`XEN_TEST_RDMA=1 xentest/xen-test.sh`,
# `make xen-rdma-test`), sourced by /init (xentest/dom0-init.sh) in dom0 in
# place of scenario.sh. busybox sh.
#
# dom0 has a virtio-net NIC (QEMU user networking with restrict=on, so
# nothing leaves the VM) and soft-RoCE on it (rxe0). ib-backend serves the
# two PVH domains with `--provider rdma`: DomU -> grant-mapped window ->
# ib-backend in dom0 -> libibverbs -> rxe0 and back. Steps, one `XEN-STEP`
# line each:
#   rxe        eth0 up with 10.0.2.15/24 and MTU 4200, `rdma link add rxe0
#              type rxe netdev eth0`, port 1 ACTIVE with an IPv6 link-local
#              RoCE v2 GID (the GID make softroce uses)
#   backend    ib-backend run --provider rdma --rdma-device rxe0 ... up, with
#              the gateway TAP ibgw0 (its own port is on rxe0 too)
#   create     both PVH domains created (g2 first: it is the receiver)
#   up         both guests print "network up"
#   ping       g1 pinged g2 (3 pings) and got answers
#   tcp        g1 sent 4 MiB to g2's discard service; SHA-256 equal on both
#   http       g1 fetched g2's page (fetch=)
#   dom0-ping  dom0 pings g1 through the gateway TAP
#   mr         zero copy: each guest's buffer area is registered in place as
#              one MR: the back end's registration lines (address, length,
#              lkey) matched against the gntdev mappings in the worker's
#              /proc/PID/maps and `rdma resource show mr` (lkey, mrlen, the
#              registering thread); the worker's VmPin shows the pinned pages
#   stats      `ib-backend stats`: both guests connected, no tx errors or
#              violations
#   reclaim    `xl destroy` of both domains: the back end reclaims each (its
#              port, so the MR and the pin on the granted pages, then the
#              grant mapping), the pinned memory goes back to 0 and no
#              `(null)` zombie domain is left holding pages
# Guest consoles are read as in scenario.sh: xenconsoled's log of the PV
# console and the `(dN) ...` lines of `xl dmesg` (port 0xe9).
#
# Why registering a grant mapping works here (Debian's 6.1 kernel, PV dom0):
# gntdev maps grants by PTE (use_ptemod) into a VM_MIXEDMAP vma, not VM_IO or
# VM_PFNMAP, and asks Xen to set the PTEs' first available bit, which is
# x86's _PAGE_SPECIAL. ib_umem_get's pin_user_pages_fast(FOLL_LONGTERM) so
# leaves the fast path at the special PTE; the slow path's check_vma_flags
# lets the vma through and vm_normal_page asks the vma's find_special_page,
# which gntdev implements (its page for that address). Those pages come from
# xen_alloc_unpopulated_pages (ZONE_DEVICE, not movable, not CMA), so the
# long-term pin keeps them, and gntdev has also grant-mapped each one at its
# kernel address, which is where rxe copies to and from (page_address).

# The helpers shared with the other scenario (xentest/guests.sh).
# shellcheck source=xentest/guests.sh
. /guests.sh

# shellcheck disable=SC2034 # /init prints it
PLAN="boot rxe backend create up ping tcp http dom0-ping mr stats reclaim"

GW=10.77.0.1
IP_g1=10.77.0.2
IP_g2=10.77.0.3
ETH_IP=10.0.2.15/24 # slirp's default guest address
# eth0's MTU sets rxe0's active MTU: 4200 gives IB MTU 4096, of which the
# guests' 4096-byte slots (40 bytes of GRH area first) use 2048, so IPoIB's
# MTU is 2044 as on the sim fabric in scenario.sh, which makes the two tcp
# figures comparable. (At 1500, as in make softroce, it is IB MTU 1024 and
# IPoIB MTU 1020.) Unicast between the guests never reaches the NIC: both
# QPs are on rxe0, which loops a packet for its own MAC back itself (only
# the IPoIB broadcast group's packets, ARP, go through eth0's IP stack).
ETH_MTU=4200
BYTES=4194304
MEM=32 # MiB per domain
WAIT=60 # seconds per wait
CONTROL=/run/ib.sock
BLOG=/run/backend.log
DMESG=/run/xen-dmesg.log
BACKEND_PID=""
RXE_GID=""
RXE_OK=0


# --- diagnostics --------------------------------------------------------------------
diag() {
    pull_dmesg
    for _g in "$@"; do
        echo "  last lines of ibguest-$_g ($(state "$_g")):"
        gshow "$_g" | tail -16 | indent
    done
    echo "  back end log ($BLOG), last lines:"
    tail -15 "$BLOG" 2>/dev/null | indent
    echo "  dom0 kernel log, last lines:"
    dmesg | tail -10 | indent
    echo "  xl list:"
    xl list 2>&1 | indent
}

stats() { ib-backend stats --control "$CONTROL" 2>&1; }
stat_of() { stats | grep "^guest $1 " | tr ' ' '\n' | sed -n "s/^$2=//p"; }


# --- the steps ------------------------------------------------------------------------
step_rxe() {
    ip link set lo up
    if ! ip link set eth0 up 2>/run/rxe.log; then
        step rxe FAIL "no eth0 in dom0: $(tail -1 /run/rxe.log); links: $(ip -o link | awk -F': ' '{ printf "%s ", $2 }')"
        return
    fi
    ip link set eth0 mtu "$ETH_MTU"
    ip addr add "$ETH_IP" dev eth0
    if ! rdma link add rxe0 type rxe netdev eth0 >/run/rxe.log 2>&1; then
        step rxe FAIL "rdma link add rxe0 type rxe netdev eth0 failed: $(tail -1 /run/rxe.log)"
        dmesg | tail -5 | indent
        return
    fi
    # rxe can send from the IPv6 link-local GID once duplicate address
    # detection has finished (IFA_F_TENTATIVE, 0x40, cleared).
    _i=0
    while [ "$_i" -lt 200 ]; do
        _l=$(grep "^fe80.* eth0$" /proc/net/if_inet6)
        if [ -n "$_l" ]; then
            _f=$(echo "$_l" | awk '{ print $5 }')
            [ $((0x$_f & 0x40)) -eq 0 ] && break
        fi
        sleep 0.1
        _i=$((_i + 1))
    done
    _gids=/sys/class/infiniband/rxe0/ports/1/gids
    _types=/sys/class/infiniband/rxe0/ports/1/gid_attrs/types
    _n=0
    while [ "$_n" -lt 16 ]; do
        _g=$(cat "$_gids/$_n" 2>/dev/null)
        _t=$(cat "$_types/$_n" 2>/dev/null)
        case "$_g:$_t" in
            fe80:*"RoCE v2") [ -z "$RXE_GID" ] && RXE_GID=$_n ;;
        esac
        case "$_g" in "" | 0000:0000:0000:0000:0000:0000:0000:0000) ;; *) echo "xen-test: rxe0 gid[$_n] $_g $_t" ;; esac
        _n=$((_n + 1))
    done
    echo "xen-test: \$ rdma link"
    rdma link 2>&1 | indent
    _link=$(rdma link show rxe0/1 2>&1)
    if echo "$_link" | grep -q "state ACTIVE" && [ -n "$RXE_GID" ]; then
        RXE_OK=1
        step rxe PASS "rxe0 port 1 ACTIVE on eth0 ($ETH_IP, $(cat /sys/class/net/eth0/mtu 2>/dev/null) MTU, driver $(basename "$(readlink /sys/class/net/eth0/device/driver 2>/dev/null)")), IPv6 link-local RoCE v2 GID index $RXE_GID: $(cat "$_gids/$RXE_GID")"
    else
        step rxe FAIL "rxe0 not ready: ${_link:-no link}; IPv6 link-local RoCE v2 GID ${RXE_GID:-missing}"
        dmesg | tail -8 | indent
    fi
}

step_backend() {
    if [ "$RXE_OK" != 1 ]; then
        step backend FAIL "no soft-RoCE device to serve on (see step rxe)"
        return
    fi
    set -- --provider rdma --rdma-device rxe0 --rdma-port 1 --rdma-gid-index "$RXE_GID" \
        --guest "name=g1,xen-domain=ibguest-g1,ip=$IP_g1" \
        --guest "name=g2,xen-domain=ibguest-g2,ip=$IP_g2" \
        --gateway "ibgw0=$GW/24" --control "$CONTROL"
    echo "xen-test: \$ ib-backend run $*"
    RUST_LOG=info ib-backend run "$@" >"$BLOG" 2>&1 &
    BACKEND_PID=$!
    _i=0
    while [ "$_i" -lt 300 ] && [ ! -S "$CONTROL" ] && backend_alive; do
        sleep 0.1
        _i=$((_i + 1))
    done
    if [ -S "$CONTROL" ] && wait_file "$BLOG" 'ib-backend: provider' 10; then
        _tap=$(ip -o -4 addr show ibgw0 2>/dev/null | awk '{ print $4 }')
        step backend PASS "ib-backend (pid $BACKEND_PID) up, TAP ibgw0 ${_tap:-missing}: $(bline 'rdma: rxe0 port'); $(bline 'ib-backend: provider')"
    else
        step backend FAIL "ib-backend did not start: $(tail -1 "$BLOG")"
        indent <"$BLOG"
    fi
}

step_create() {
    write_cfg g2 ""
    write_cfg g1 "peer=$IP_g2 send=$IP_g2:9:$BYTES fetch=http://$IP_g2/"
    create g2
    _r2=$?
    _c2=$CREATED
    create g1
    _r1=$?
    _c1=$CREATED
    if [ "$_r1" = 0 ] && [ "$_r2" = 0 ]; then
        step create PASS "$_c2; $_c1"
    else
        step create FAIL "$_c2; $_c1"
        diag g2 g1
    fi
}

step_up() {
    _t=$(now)
    _fail=""
    _detail=""
    for _g in g2 g1; do
        wait_guest "$_g" 'network up' "$WAIT"
        _rc=$?
        if [ "$_rc" = 0 ]; then
            _detail="$_detail ibguest-$_g: $(gline "$_g" 'network up' | sed 's/^ibguest: //');"
        else
            _fail="$_fail $(why_not "$_g" "$_rc" "'network up'");"
        fi
    done
    if [ -z "$_fail" ]; then
        step up PASS "within $(since "$_t") s of the creates:$_detail"
    else
        step up FAIL "${_fail# }"
        diag g2 g1
    fi
}

step_ping() {
    wait_guest g1 "peer $IP_g2 answered\|peer $IP_g2 did not answer\|ping failed" "$WAIT"
    _rc=$?
    _l=$(gline g1 "peer $IP_g2\|ping failed")
    if [ "$_rc" = 0 ] && echo "$_l" | grep -q 'answered [1-9]'; then
        step ping PASS "g1 -> g2 over rxe0: ${_l#ibguest: }"
    else
        [ "$_rc" = 0 ] || _l=$(why_not g1 "$_rc" "a ping result")
        step ping FAIL "g1 -> g2: ${_l#ibguest: }"
        diag g1 g2
    fi
}

step_tcp() {
    wait_guest g1 "sent $BYTES bytes sha256\|send failed" 240
    _rc=$?
    _sent=$(gline g1 "sent $BYTES bytes sha256\|send failed")
    if [ "$_rc" != 0 ]; then
        step tcp FAIL "$(why_not g1 "$_rc" "the send result")"
        diag g1 g2
        return
    fi
    _sum=$(echo "$_sent" | sed -n "s/.*sent $BYTES bytes sha256 \([0-9a-f]*\) .*/\1/p")
    _ms=$(echo "$_sent" | sed -n 's/.* in \([0-9]*\) ms .*/\1/p')
    if [ -z "$_sum" ]; then
        step tcp FAIL "g1: ${_sent#ibguest: }"
        diag g1 g2
        return
    fi
    wait_guest g2 "discard from .*: $BYTES bytes sha256" 30
    _rc=$?
    _got=$(gline g2 "discard from .*: $BYTES bytes sha256" | sed -n 's/.* sha256 \([0-9a-f]*\).*/\1/p')
    _mbs=$(awk -v b="$BYTES" -v ms="${_ms:-0}" 'BEGIN { if (ms > 0) printf "%.2f", b / ms / 1000; else print "?" }')
    if [ "$_got" = "$_sum" ]; then
        step tcp PASS "g1 sent $BYTES bytes to g2:9 over rxe0 in ${_ms:-?} ms ($_mbs MB/s); SHA-256 $_sum on both sides"
    elif [ -n "$_got" ]; then
        step tcp FAIL "SHA-256 differs: g1 sent $_sum, g2 received $_got"
    else
        step tcp FAIL "g1 sent $BYTES bytes (sha256 $_sum) but g2 reported no such discard: $(why_not g2 "$_rc" "a discard report")"
        diag g2 g1
    fi
}

step_http() {
    wait_guest g1 "fetch\|http://$IP_g2" "$WAIT" 'command line\|config: '
    _rc=$?
    _l=$(glog g1 | grep -v 'command line\|config: ' | grep "fetch\|http://$IP_g2" | tail -1)
    if [ "$_rc" = 0 ] && echo "$_l" | grep -q '\b200\b'; then
        step http PASS "g1 fetched http://$IP_g2/: ${_l#ibguest: }"
    else
        [ "$_rc" = 0 ] || _l=$(why_not g1 "$_rc" "a fetch result")
        step http FAIL "g1: ${_l#ibguest: }"
        diag g1 g2
    fi
}

step_dom0_ping() {
    ping -c 3 -w 20 "$IP_g1" >/run/ping.log 2>&1
    _rc=$?
    _r="$(grep 'packets transmitted' /run/ping.log)$(sed -n 's/.*min\/avg\/max = /, rtt min\/avg\/max /p' /run/ping.log)"
    if [ "$_rc" = 0 ]; then
        step dom0-ping PASS "dom0 -> g1 ($IP_g1) through ibgw0 and rxe0: $_r"
    else
        step dom0-ping FAIL "dom0 -> g1 ($IP_g1) through ibgw0: ${_r:-$(tail -1 /run/ping.log)}"
        diag g1
    fi
}

# gntdev_vma PID ADDR LEN: the /proc/PID/maps line of the /dev/xen/gntdev
# mapping that holds ADDR..ADDR+LEN, if there is one.
gntdev_vma() {
    grep '/dev/xen/gntdev' "/proc/$1/maps" 2>/dev/null | while read -r _range _rest; do
        _s=${_range%-*}
        _e=${_range#*-}
        if [ $((0x$_s)) -le $(($2)) ] && [ $(($2 + $3)) -le $((0x$_e)) ]; then
            echo "$_range $_rest"
            break
        fi
    done
}

step_mr() {
    _w=$(stats | sed -n 's/^backend .*worker_pid=\([0-9]*\).*/\1/p')
    echo "xen-test: the back end's worker is pid ${_w:-?}; its registrations:"
    grep 'registered as one memory region\|ibv_reg_mr\|cannot open an rdma port' "$BLOG" | sed 's/^\[[^]]*\] *//' | indent
    echo "xen-test: \$ rdma resource show mr"
    rdma resource show mr >/run/rdma-mr.txt 2>&1
    indent </run/rdma-mr.txt
    echo "xen-test: /dev/xen/gntdev mappings of pid ${_w:-?}:"
    grep '/dev/xen/gntdev' "/proc/${_w:-0}/maps" 2>/dev/null | indent
    _pin=$(sed -n 's/^VmPin:[[:space:]]*//p' "/proc/${_w:-0}/status" 2>/dev/null)
    echo "xen-test: VmPin of pid ${_w:-?}: ${_pin:-?}"
    echo "xen-test: dom0 kernel log (rxe, umem, gntdev, grant):"
    dmesg | grep -i 'rxe\|umem\|gntdev\|grant\|warning\|bug:\|call trace' | tail -20 | indent
    # Each registration line: "rdma: rxe0: LEN bytes at 0xADDR registered as
    # one memory region (lkey 0xKEY); ..."
    _zc=0
    _other=0
    _detail=""
    grep 'registered as one memory region' "$BLOG" | sed -n 's/.* \([0-9]*\) bytes at \(0x[0-9a-f]*\) registered .*(lkey \(0x[0-9a-f]*\)).*/\1 \2 \3/p' >/run/mrs.txt
    while read -r _len _addr _lkey; do
        _vma=$(gntdev_vma "$_w" "$_addr" "$_len")
        # The MR's pid is the thread that registered it (a worker thread, or
        # the main thread for the gateway): one of the worker process's tasks.
        _res=$(grep "lkey $_lkey " /run/rdma-mr.txt | grep "mrlen $_len ")
        _tid=$(echo "$_res" | sed -n 's/.* pid \([0-9]*\) .*/\1/p')
        [ -n "$_tid" ] && [ -d "/proc/$_w/task/$_tid" ] || _res=""
        if [ -n "$_vma" ] && [ -n "$_res" ]; then
            _zc=$((_zc + 1))
            _detail="$_detail MR lkey $_lkey ($(echo "$_res" | sed 's/.*\(mrn [0-9]*\).* \(comm [^ ]*\).*/\1, \2/')): $_len bytes at $_addr inside the gntdev mapping ${_vma%% *};"
        elif [ -n "$_res" ]; then
            _other=$((_other + 1))
        fi
    done </run/mrs.txt
    if [ "$_zc" -ge 2 ]; then
        step mr PASS "zero copy: $_zc guest windows registered in place, each one MR over its grant mapping;$_detail worker VmPin ${_pin:-?} ($_other other MR(s): the gateway's)"
    else
        step mr FAIL "$_zc guest window(s) registered in place over a gntdev mapping (want 2); back end: $(bline 'ibv_reg_mr\|cannot open an rdma port')"
    fi
}

step_stats() {
    stats >/run/stats.txt
    echo "xen-test: \$ ib-backend stats"
    indent </run/stats.txt
    _fail=""
    for _g in g1 g2; do
        grep -q "^guest $_g state=connected " /run/stats.txt || _fail="$_fail guest $_g not connected;"
    done
    grep -q "^total .* tx_errors=0 .* violations=0 " /run/stats.txt || _fail="$_fail tx errors or violations;"
    backend_alive || _fail="$_fail the back end died;"
    _tot=$(grep '^total ' /run/stats.txt | tr ' ' '\n' | grep '^\(tx_packets\|tx_bytes\|rx_packets\|rx_bytes\|tx_errors\|violations\)=' | tr '\n' ' ')
    if [ -z "$_fail" ]; then
        step stats PASS "provider=$(sed -n 's/^backend provider=\([a-z]*\).*/\1/p' /run/stats.txt); g1 and g2 connected; total ${_tot% }"
    else
        step stats FAIL "${_fail# }"
    fi
}

step_reclaim() {
    _w=$(stats | sed -n 's/^backend .*worker_pid=\([0-9]*\).*/\1/p')
    _fail=""
    for _g in g1 g2; do
        eval "_id=\$DOMID_$_g"
        xl destroy "ibguest-$_g" >/run/xl-destroy.log 2>&1 ||
            _fail="$_fail xl destroy ibguest-$_g failed: $(tail -1 /run/xl-destroy.log);"
        wait_file "$BLOG" "guest $_g: domain $_id destroyed" 30 ||
            _fail="$_fail the back end logged no reclaim of $_g (domid $_id) within 30 s;"
    done
    _i=0
    while [ "$_i" -lt 30 ]; do
        xl list >/run/xl-list.txt 2>&1
        grep -q 'ibguest-\|(null)' /run/xl-list.txt || break
        sleep 1
        _i=$((_i + 1))
    done
    grep -q 'ibguest-\|(null)' /run/xl-list.txt &&
        _fail="$_fail xl list still shows a guest or a zombie 30 s later: $(awk 'NR > 1 { printf "%s(%s,%s) ", $1, $2, $5 }' /run/xl-list.txt);"
    _pin=$(sed -n 's/^VmPin:[[:space:]]*//p' "/proc/${_w:-0}/status" 2>/dev/null)
    rdma resource show mr >/run/rdma-mr-after.txt 2>&1
    echo "xen-test: after the destroys: rdma resource show mr:"
    indent </run/rdma-mr-after.txt
    backend_alive || _fail="$_fail the back end died;"
    if [ -z "$_fail" ]; then
        step reclaim PASS "both domains destroyed: $(bline 'guest g1: domain .* destroyed'); $(bline 'guest g2: domain .* destroyed'); xl list: $(awk 'NR > 1 { printf "%s%s", s, $1; s = ", " }' /run/xl-list.txt); worker VmPin now ${_pin:-?}, $(grep -c 'mrn' /run/rdma-mr-after.txt) MR(s) left (the gateway's)"
    else
        step reclaim FAIL "${_fail# }"
        diag g1 g2
    fi
}

scenario() {
    : >"$DMESG"
    step_rxe
    step_backend
    step_create
    step_up
    step_ping
    step_tcp
    step_http
    step_dom0_ping
    step_mr
    step_stats
    step_reclaim

    echo "xen-test: xl list at the end:"
    xl list 2>&1 | indent
    for _c in /run/core.*; do
        [ -f "$_c" ] && echo "xen-test: a program crashed and dumped core: $_c ($(wc -c <"$_c") bytes): $(strings -n 3 "$_c" | head -12 | tr '\n' ' ')"
    done
    pull_dmesg
    dmesg >/run/dom0-dmesg.log
    if backend_alive; then
        kill "$BACKEND_PID"
        wait "$BACKEND_PID"
    fi
    dump backend.log "$BLOG"
    dump xen-dmesg.log "$DMESG"
    dump kernel-dmesg.log /run/dom0-dmesg.log
    for _g in g1 g2; do dump "guest-$_g.log" "$(conlog "$_g")"; done
    dump xl-create-g1.log /run/xl-create-g1.log
    dump xl-create-g2.log /run/xl-create-g2.log
}
