# shellcheck shell=sh
# shellcheck disable=SC2154 # _ip, _old, _new and friends are set by eval
# The xen-test scenario, sourced by /init (xentest/dom0-init.sh) in dom0 once
# xenstored, xen-init-dom0 and xenconsoled are up. busybox sh.
#
# ib-backend (sim fabric) serves two seats that attach to Xen domains by
# name, ibguest-g1 (10.77.0.2) and ibguest-g2 (10.77.0.3), with a gateway
# TAP ibgw0 (10.77.0.1/24) into dom0. Steps, one `XEN-STEP` line each:
#   backend    ib-backend started (control socket up, TAP ibgw0 there)
#   create     both PVH domains created (g2 first: it is the receiver)
#   up         both guests print "network up"
#   ping       g1 pinged g2 (3 pings) and got answers
#   tcp        g1 sent 4 MiB to g2's discard service; SHA-256 equal on both
#   http       g1 fetched g2's page (fetch=); FAIL if the image lacks fetch=
#   dom0-ping  dom0 pings g1 through the gateway TAP
#   dom0-http  dom0 fetches g2's status page (busybox wget)
#   linux-domu an IB-unaware Linux domU (Debian's kernel, xen-netfront, a
#              busybox initramfs) on a routed vif (10.78.0.2; dom0 is
#              10.78.0.1 on it, hotplug script vif-ibgw) pings g1 and fetches
#              g2's page through dom0 and the back end's gateway; then it is
#              destroyed
#   destroy    `xl destroy ibguest-g2` under traffic: the back end reclaims
#              it, no zombie domain, g1 still answers
#   recreate   g2 again: fresh domid, network up, it pings g1, dom0 pings it
#   hostile    a third domain, ibguest-g3, publishes a broken channel on
#              purpose (xen-fault=bad-ref, bad-port, huge-window, read-only,
#              one domain each): the back end refuses it with a log line and
#              a counter, the guest reports it and crashes (exit 0x18), and
#              g1 carries on (dom0 still pings it)
#   cm         connected mode under Xen: ibguest-g4 and ibguest-g5 (cm=on,
#              seats with max-rc-conns=4 and no ip=, as connected mode
#              needs) agree to it, g4 sends 4 MiB to g5 over an RC
#              connection (at least 90 % of the bytes over RC by g4's own
#              count), SHA-256 equal on both; then both are destroyed
# The guest's console is read from BOTH xenconsoled's log
# (/var/log/xen/console/guest-ibguest-gN.log, the PV console) and the
# `(dN) ...` lines of `xl dmesg` (port 0xe9), so the waits work whichever
# the image writes.

# The helpers shared with the other scenario (xentest/guests.sh).
# shellcheck source=xentest/guests.sh
. /guests.sh

# shellcheck disable=SC2034 # /init prints it
PLAN="boot backend create up ping tcp http dom0-ping dom0-http linux-domu destroy recreate hostile cm"

GW=10.77.0.1
IP_g1=10.77.0.2
IP_g2=10.77.0.3
IP_g3=10.77.0.4
IP_g4=10.77.0.5
IP_g5=10.77.0.6
BYTES=4194304
MEM=32 # MiB per domain
WAIT=60 # seconds per wait
CONTROL=/run/ib.sock
BLOG=/run/backend.log
DMESG=/run/xen-dmesg.log
BACKEND_PID=""
FETCH=1 # g1 is given fetch= until it turns it down


# --- diagnostics --------------------------------------------------------------------
diag() { # guest names: what to look at when a step failed
    pull_dmesg
    for _g in "$@"; do
        echo "  last lines of ibguest-$_g ($(state "$_g")):"
        gshow "$_g" | tail -16 | indent
    done
    echo "  back end log ($BLOG), last lines:"
    tail -15 "$BLOG" 2>/dev/null | indent
    echo "  xl list:"
    xl list 2>&1 | indent
    echo "  xl dmesg, last Xen lines:"
    grep -v '(d[0-9]*) ' "$DMESG" | tail -10 | indent
}

# --- the back end and the domains ---------------------------------------------------
start_backend() {
    RUST_LOG=info ib-backend run --provider sim \
        --guest "name=g1,xen-domain=ibguest-g1,ip=$IP_g1" \
        --guest "name=g2,xen-domain=ibguest-g2,ip=$IP_g2" \
        --guest "name=g3,xen-domain=ibguest-g3,ip=$IP_g3" \
        --guest "name=g4,xen-domain=ibguest-g4,max-rc-conns=4" \
        --guest "name=g5,xen-domain=ibguest-g5,max-rc-conns=4" \
        --gateway "ibgw0=$GW/24" --control "$CONTROL" >"$BLOG" 2>&1 &
    BACKEND_PID=$!
    _i=0
    while [ "$_i" -lt 300 ]; do
        [ -S "$CONTROL" ] && return 0
        kill -0 "$BACKEND_PID" 2>/dev/null || return 1
        sleep 0.1
        _i=$((_i + 1))
    done
    return 1
}
# gstat NAME: the back end's counters for guest NAME, one line.
gstat() { ib-backend stats --control "$CONTROL" 2>/dev/null | grep "^guest $1 "; }
# stat_of NAME KEY: one counter (or state) of guest NAME.
stat_of() { gstat "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }


# --- the steps ------------------------------------------------------------------------
step_backend() {
    echo "xen-test: \$ ib-backend run --provider sim --guest name=g1,xen-domain=ibguest-g1,ip=$IP_g1 --guest name=g2,xen-domain=ibguest-g2,ip=$IP_g2 --guest name=g3,xen-domain=ibguest-g3,ip=$IP_g3 --guest name=g4,xen-domain=ibguest-g4,max-rc-conns=4 --guest name=g5,xen-domain=ibguest-g5,max-rc-conns=4 --gateway ibgw0=$GW/24 --control $CONTROL"
    if start_backend; then
        # The control socket comes before the gateway and the "provider" line.
        wait_file "$BLOG" 'ib-backend: provider' 10
        _tap=$(ip -o -4 addr show ibgw0 2>/dev/null | awk '{ print $4 }')
        step backend PASS "ib-backend (pid $BACKEND_PID) up, TAP ibgw0 ${_tap:-missing}: $(bline 'ib-backend: provider')"
    else
        if backend_alive; then
            _why="its control socket did not appear within 30 s"
        else
            wait "$BACKEND_PID"
            _why="it exited with status $?"
        fi
        step backend FAIL "ib-backend did not start: $_why: $(tail -1 "$BLOG")"
        indent <"$BLOG"
    fi
}

step_create() {
    write_cfg g2 ""
    _g1_extra="peer=$IP_g2 send=$IP_g2:9:$BYTES"
    write_cfg g1 "$_g1_extra fetch=http://$IP_g2/"
    create g2
    _r2=$?
    _c2=$CREATED
    create g1
    _r1=$?
    _c1=$CREATED
    # An image without fetch= turns the whole command line down: then run g1
    # without it (the http step reports it).
    if [ "$_r1" = 0 ]; then
        wait_guest g1 'bad command line\|config: \|network up\|fatal' 30
        if gline g1 'bad command line' | grep -q fetch; then
            FETCH=0
            FETCH_WHY=$(gline g1 'bad command line')
            echo "xen-test: the image turned down fetch=: $FETCH_WHY"
            echo "xen-test: creating ibguest-g1 again without fetch="
            xl destroy ibguest-g1 >/dev/null 2>&1
            write_cfg g1 "$_g1_extra"
            create g1
            _r1=$?
            _c1="$CREATED (second try, without fetch=)"
        fi
    fi
    for _g in g2 g1; do
        echo "xen-test: /etc/xen/ibguest-$_g.cfg:"
        indent <"/etc/xen/ibguest-$_g.cfg"
    done
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
        step ping PASS "g1 -> g2: ${_l#ibguest: }"
    elif [ "$_rc" = 0 ]; then
        step ping FAIL "g1 -> g2: ${_l#ibguest: }"
        diag g1 g2
    else
        step ping FAIL "$(why_not g1 "$_rc" "a ping result")"
        diag g1 g2
    fi
}

step_tcp() {
    wait_guest g1 "sent $BYTES bytes sha256\|send failed" 180
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
        step tcp PASS "g1 sent $BYTES bytes to g2:9 in ${_ms:-?} ms ($_mbs MB/s); SHA-256 $_sum on both sides"
    elif [ -n "$_got" ]; then
        step tcp FAIL "SHA-256 differs: g1 sent $_sum, g2 received $_got"
    else
        step tcp FAIL "g1 sent $BYTES bytes (sha256 $_sum) but g2 reported no such discard: $(why_not g2 "$_rc" "a discard report")"
        diag g2 g1
    fi
}

step_http() {
    if [ "$FETCH" = 0 ]; then
        step http FAIL "fetch= not supported by the image (${FETCH_WHY#ibguest: })"
        return
    fi
    # The result line names the URL or says fetch; the command-line echo and
    # the config line are not it.
    wait_guest g1 "fetch\|http://$IP_g2" "$WAIT" 'command line\|config: '
    _rc=$?
    _l=$(glog g1 | grep -v 'command line\|config: ' | grep "fetch\|http://$IP_g2" | tail -1)
    if [ "$_rc" = 0 ] && echo "$_l" | grep -q '\b200\b'; then
        step http PASS "g1 fetched http://$IP_g2/: ${_l#ibguest: }"
    elif [ "$_rc" = 0 ]; then
        step http FAIL "g1: ${_l#ibguest: }"
        diag g1 g2
    else
        step http FAIL "$(why_not g1 "$_rc" "a fetch result")"
        diag g1 g2
    fi
}

step_dom0_ping() {
    if ! ip link show ibgw0 >/dev/null 2>&1; then
        step dom0-ping FAIL "no TAP ibgw0 in dom0 (the back end's gateway)"
        return
    fi
    if _r=$(ping_from_dom0 "$IP_g1"); then
        step dom0-ping PASS "dom0 -> g1 ($IP_g1) through ibgw0: $_r"
    else
        step dom0-ping FAIL "dom0 -> g1 ($IP_g1) through ibgw0: $_r"
        diag g1
    fi
}

step_dom0_http() {
    _t=$(now)
    # busybox 1.35's static wget crashes (SIGSEGV) with -T: use timeout.
    if timeout 30 wget -q -O /run/g2-page.txt "http://$IP_g2/" 2>/run/wget.log && [ -s /run/g2-page.txt ]; then
        step dom0-http PASS "wget http://$IP_g2/ from dom0: $(wc -c </run/g2-page.txt) bytes in $(since "$_t") s: $(head -3 /run/g2-page.txt | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
        indent </run/g2-page.txt
    else
        step dom0-http FAIL "wget http://$IP_g2/ from dom0: $(tail -1 /run/wget.log)$([ -s /run/wget.log ] || echo 'no answer within 30 s')"
        diag g2
    fi
}

# --- step linux-domu: "Solution I", a stock Linux domU through the gateway ----------
DOMU=linux-domu
DOMU_IP=10.78.0.2
DOMU_GW=10.78.0.1
DOMU_MEM=128 # MiB
DOMU_WAIT=120 # seconds from xl create to the domU's LINUX-DOMU-DONE
DOMU_CON=/var/log/xen/console/guest-$DOMU.log
DOMU_ID=""
# domu_state: xl list's state of the domU ("-b----"), empty when it is gone.
domu_state() { xl list "$DOMU" 2>/dev/null | awk 'NR == 2 { print $5 }'; }
# domu_between BEGIN END: the lines of /run/domu-con.txt after the one that
# starts with BEGIN and before the one that starts with END.
domu_between() { awk -v b="$1" -v e="$2" 'index($0, e) == 1 { f = 0 } f { print } index($0, b) == 1 { f = 1 }' /run/domu-con.txt; }
domu_diag() {
    echo "  the domU's console ($DOMU_CON), last lines:"
    tr -d '\r' <"$DOMU_CON" 2>/dev/null | tail -25 | indent
    echo "  /run/vif-ibgw.log (the vif hotplug script):"
    indent </run/vif-ibgw.log 2>/dev/null
    echo "  dom0: ip_forward=$(cat /proc/sys/net/ipv4/ip_forward); addresses, routes, counters:"
    {
        ip -o -4 addr
        ip route
        ip -s link show ibgw0
        [ -n "$DOMU_ID" ] && ip -s link show "vif$DOMU_ID.0"
    } 2>&1 | indent
    echo "  ib-backend stats:"
    ib-backend stats --control "$CONTROL" 2>&1 | indent
    echo "  xl list:"
    xl list 2>&1 | indent
    pull_dmesg
    echo "  xl dmesg, last Xen lines:"
    grep -v '(d[0-9]*) ' "$DMESG" | tail -10 | indent
}
# domu_gone: destroys the domU if it is still there and waits (30 s) until
# xl list shows neither it nor a (null) zombie; 0 when it is gone.
domu_gone() {
    [ -n "$(domu_state)" ] && xl destroy "$DOMU" >"/run/xl-destroy-$DOMU.log" 2>&1
    _i=0
    while [ "$_i" -lt 30 ]; do
        xl list >/run/xl-list.txt 2>&1
        grep -q "$DOMU\|(null)" /run/xl-list.txt || return 0
        sleep 1
        _i=$((_i + 1))
    done
    return 1
}

step_linux_domu() {
    if [ ! -f /domu/vmlinuz ] || [ ! -f /domu/initrd.gz ] || [ ! -x /etc/xen/scripts/vif-ibgw ]; then
        step linux-domu FAIL "the initramfs lacks /domu/vmlinuz, /domu/initrd.gz or /etc/xen/scripts/vif-ibgw"
        return
    fi
    if [ ! -d /sys/module/xen_netback ]; then
        step linux-domu FAIL "xen-netback is not loaded in dom0"
        return
    fi
    # dom0 routes between the vif (10.78.0.0/24) and ibgw0 (10.77.0.0/24).
    echo 1 >/proc/sys/net/ipv4/ip_forward
    # pci=off: a PVH domU has no PCI, and under nested TCG the kernel's
    # early PCI probing (port 0xcf8, "AGP: Checking aperture") once died of
    # a triple fault in Xen's port-I/O emulation (the registers Xen dumped).
    cat >"/etc/xen/$DOMU.cfg" <<EOF
name = "$DOMU"
type = "pvh"
kernel = "/domu/vmlinuz"
ramdisk = "/domu/initrd.gz"
cmdline = "console=hvc0 quiet loglevel=3 pci=off rdinit=/init xentest.ip=$DOMU_IP/24 xentest.gw=$DOMU_GW xentest.ping=$IP_g1 xentest.url=http://$IP_g2/"
memory = $DOMU_MEM
vcpus = 1
tsc_mode = "native"
vif = ["script=/etc/xen/scripts/vif-ibgw,ip=$DOMU_IP"]
on_poweroff = "destroy"
on_crash = "preserve"
on_reboot = "preserve"
EOF
    echo "xen-test: /etc/xen/$DOMU.cfg:"
    indent <"/etc/xen/$DOMU.cfg"
    # A PVH domain sometimes dies of a triple fault before its first line
    # under nested TCG (see README.md): one more try then, said in the detail.
    _retried=""
    for _attempt in 1 2; do
        _off=0
        [ -f "$DOMU_CON" ] && _off=$(wc -c <"$DOMU_CON")
        _t=$(now)
        xl create "/etc/xen/$DOMU.cfg" >"/run/xl-create-$DOMU.log" 2>&1
        _rc=$?
        _took=$(since "$_t")
        DOMU_ID=$(xl domid "$DOMU" 2>/dev/null)
        if [ "$_rc" != 0 ]; then
            step linux-domu FAIL "xl create $DOMU exited with $_rc: $(grep -v '^Parsing config' "/run/xl-create-$DOMU.log" | tail -2 | tr '\n' ' ')"
            indent <"/run/xl-create-$DOMU.log"
            domu_diag
            domu_gone
            return
        fi
        echo "xen-test: $DOMU is domid $DOMU_ID (xl create took $_took s); vif-ibgw: $(tail -1 /run/vif-ibgw.log 2>/dev/null)"
        # Its results, or its end.
        _end=$(($(secs) + DOMU_WAIT))
        _n=0
        _why=""
        while ! tail -c +$((_off + 1)) "$DOMU_CON" 2>/dev/null | grep -q '^LINUX-DOMU-DONE'; do
            if [ $((_n % 4)) = 0 ]; then
                _st=$(domu_state)
                case "$_st" in "" | *[scd]*)
                    sleep 1
                    tail -c +$((_off + 1)) "$DOMU_CON" 2>/dev/null | grep -q '^LINUX-DOMU-DONE' && break
                    _why="the domU stopped (${_st:-gone}) before LINUX-DOMU-DONE"
                    break
                    ;;
                esac
            fi
            if [ "$(secs)" -ge "$_end" ]; then
                _why="no LINUX-DOMU-DONE within $DOMU_WAIT s of xl create"
                break
            fi
            _n=$((_n + 1))
            sleep 0.5
        done
        _st=$(domu_state)
        if [ -n "$_why" ] && [ "$_attempt" = 1 ] && [ -z "$(tail -c +$((_off + 1)) "$DOMU_CON" 2>/dev/null | tr -d '\r\n')" ]; then
            pull_dmesg
            _retried=" (retried: domid $DOMU_ID died before its first line, ${_st:-gone}; Xen: $(grep "d${DOMU_ID}v0 " "$DMESG" | tail -1))"
            echo "xen-test: $DOMU$_retried"
            xl destroy "$DOMU" >/dev/null 2>&1
            domu_gone >/dev/null
            continue
        fi
        break
    done
    _ran=$(since "$_t")
    # This run's console lines, for the checks below.
    tail -c +$((_off + 1)) "$DOMU_CON" 2>/dev/null | tr -d '\r' >/run/domu-con.txt
    echo "xen-test: the domU's console ($DOMU_CON; the page's first lines only):"
    awk '/^LINUX-DOMU-PAGE\|/ && ++n > 3 { next } { print }' /run/domu-con.txt | indent
    _fail=""
    [ -n "$_why" ] && _fail="$_why;"
    _boot=$(sed -n 's/^LINUX-DOMU: kernel .*\/init at \([0-9.]*\) s.*/\1/p' /run/domu-con.txt)
    _eth=$(sed -n 's/^LINUX-DOMU: \(eth0 .*\), at [0-9.]* s$/\1/p' /run/domu-con.txt)
    [ -n "$_eth" ] || _fail="$_fail no eth0 configured (xen-netfront);"
    # The ping to g1.
    _prc=$(sed -n 's/^LINUX-DOMU-PING-END rc=//p' /run/domu-con.txt)
    _psum=$(domu_between LINUX-DOMU-PING-BEGIN LINUX-DOMU-PING-END | grep 'packets transmitted')
    _prtt=$(domu_between LINUX-DOMU-PING-BEGIN LINUX-DOMU-PING-END | sed -n 's/.*min\/avg\/max = //p')
    _ping="${_psum:-no summary}${_prtt:+, rtt min/avg/max $_prtt}"
    # Any answer will do (ping_from_dom0 in guests.sh says why); the
    # summary shows the loss.
    if ! echo "$_psum" | grep -q ' [1-9][0-9]* packets received'; then
        _fail="$_fail ping $IP_g1 from the domU (rc ${_prc:-none}): $_ping;"
    fi
    # The page from g2.
    _wend=$(grep '^LINUX-DOMU-WGET-END' /run/domu-con.txt)
    _wrc=$(echo "$_wend" | sed -n 's/.* rc=\([0-9]*\).*/\1/p')
    _wbytes=$(echo "$_wend" | sed -n 's/.* bytes=\([0-9]*\).*/\1/p')
    # The page's <title>, else its first two lines.
    _page=$(sed -n 's/^LINUX-DOMU-PAGE| .*<title>\(.*\)<\/title>.*/title "\1"/p' /run/domu-con.txt | head -1)
    [ -n "$_page" ] || _page=$(sed -n 's/^LINUX-DOMU-PAGE| //p' /run/domu-con.txt | head -2 | tr '\n' ';' | sed 's/;$//; s/;/; /g')
    if [ "$_wrc" != 0 ] || [ "${_wbytes:-0}" -eq 0 ]; then
        _fail="$_fail wget http://$IP_g2/ from the domU (rc ${_wrc:-none}, ${_wbytes:-0} bytes): $(sed -n 's/^LINUX-DOMU-WGET-ERR| //p' /run/domu-con.txt | tail -1);"
    fi
    [ -n "$_fail" ] && domu_diag
    # Gone, vif and all, before the next steps (destroy looks for zombies).
    _t2=$(now)
    _gone=""
    if domu_gone; then
        _gone="gone from xl list $(since "$_t2") s after xl destroy"
    else
        _fail="$_fail xl list still shows $DOMU or a zombie 30 s after xl destroy: $(awk 'NR > 1 { printf "%s(%s,%s) ", $1, $2, $5 }' /run/xl-list.txt);"
    fi
    if [ -n "$DOMU_ID" ] && ip link show "vif$DOMU_ID.0" >/dev/null 2>&1; then
        _fail="$_fail dom0 still has vif$DOMU_ID.0;"
    fi
    if [ -z "$_fail" ]; then
        step linux-domu PASS "$DOMU$_retried (PVH, kernel $(uname -r), domid $DOMU_ID, xl create $_took s, its /init at ${_boot:-?} s of its uptime, done $_ran s after xl create; $_eth): ping $IP_g1: $_ping; wget http://$IP_g2/: $_wbytes bytes: $_page; $_gone"
    else
        step linux-domu FAIL "${_fail# }"
    fi
}

step_destroy() {
    eval "_old=\$DOMID_g2"
    # Traffic through the back end while g2 goes: dom0 pings both guests.
    ping -i 0.2 -w 40 "$IP_g2" >/run/ping-g2-destroy.log 2>&1 &
    _p2=$!
    ping -i 0.2 -w 40 "$IP_g1" >/run/ping-g1-destroy.log 2>&1 &
    _p1=$!
    sleep 2
    _t=$(now)
    _fail=""
    if xl destroy ibguest-g2 >/run/xl-destroy.log 2>&1; then
        _took=$(since "$_t")
    else
        _fail="xl destroy ibguest-g2 failed: $(tail -1 /run/xl-destroy.log);"
    fi
    # The back end notices and takes the seat's pages back.
    wait_file "$BLOG" "g2.*\(destroyed\|reclaim\)\|domain $_old destroyed" 30 ||
        _fail="$_fail the back end logged no reclaim of g2 (domid $_old) within 30 s;"
    _reclaim=$(bline "g2.*\(destroyed\|reclaim\)\|domain $_old destroyed")
    # No leftovers: no ibguest-g2 and no (null) zombie that still holds pages.
    _i=0
    while [ "$_i" -lt 30 ]; do
        xl list >/run/xl-list.txt 2>&1
        grep -q 'ibguest-g2\|(null)' /run/xl-list.txt || break
        sleep 1
        _i=$((_i + 1))
    done
    grep -q 'ibguest-g2\|(null)' /run/xl-list.txt &&
        _fail="$_fail xl list still shows g2 or a zombie 30 s later: $(awk 'NR > 1 { printf "%s(%s,%s) ", $1, $2, $5 }' /run/xl-list.txt);"
    _left=$(awk 'NR > 1 { printf "%s%s", s, $1; s = ", " }' /run/xl-list.txt)
    sleep 2
    kill -INT "$_p1" "$_p2" 2>/dev/null
    wait "$_p1" "$_p2" 2>/dev/null
    _g1_replies=$(grep -c 'bytes from' /run/ping-g1-destroy.log)
    _g2_replies=$(grep -c 'bytes from' /run/ping-g2-destroy.log)
    backend_alive || _fail="$_fail the back end died;"
    ib-backend stats --control "$CONTROL" >/run/stats-destroy.txt 2>&1 ||
        _fail="$_fail ib-backend stats failed: $(tail -1 /run/stats-destroy.txt);"
    echo "xen-test: ib-backend stats after the destroy:"
    indent </run/stats-destroy.txt
    _s1=$(sed -n 's/^guest g1 .*\(state=[a-z]*\).*/\1/p' /run/stats-destroy.txt)
    _s2=$(grep '^guest g2 ' /run/stats-destroy.txt | tr ' ' '\n' | grep '^\(state\|reclaims\|domain_releases\)=' | tr '\n' ' ')
    [ "$_s1" = state=connected ] || _fail="$_fail ib-backend stats show g1 ${_s1:-missing}, not connected;"
    if _r=$(ping_from_dom0 "$IP_g1"); then
        _g1="dom0 -> g1 still: $_r"
    else
        _fail="$_fail dom0 can no longer ping g1: $_r;"
    fi
    if [ -z "$_fail" ]; then
        step destroy PASS "xl destroy ibguest-g2 (domid $_old) in $_took s under ping; back end: ${_reclaim:-?}; xl list: $_left; stats: g1 $_s1, g2 ${_s2% }; $_g1; dom0's background pings: g1 answered $_g1_replies, g2 $_g2_replies (before it went)"
    else
        step destroy FAIL "${_fail# }"
        diag g1
    fi
}

step_recreate() {
    eval "_old=\$DOMID_g2"
    # This time g2 pings g1: the fabric between them works both ways again.
    write_cfg g2 "peer=$IP_g1"
    if ! create g2; then
        step recreate FAIL "$CREATED"
        diag g2
        return
    fi
    _c=$CREATED
    eval "_new=\$DOMID_g2"
    _fail=""
    [ "$_new" != "$_old" ] || _fail="g2 got the old domid $_old again;"
    wait_guest g2 'network up' "$WAIT"
    _rc=$?
    if [ "$_rc" = 0 ]; then
        wait_guest g2 "peer $IP_g1 answered\|peer $IP_g1 did not answer\|ping failed" "$WAIT"
        _rc=$?
        _l=$(gline g2 "peer $IP_g1\|ping failed")
        if [ "$_rc" != 0 ]; then
            _fail="$_fail $(why_not g2 "$_rc" "a ping result");"
        elif ! echo "$_l" | grep -q 'answered [1-9]'; then
            _fail="$_fail g2 -> g1: ${_l#ibguest: };"
        fi
        if _r=$(ping_from_dom0 "$IP_g2"); then
            _d="dom0 -> g2: $_r"
        else
            _fail="$_fail dom0 cannot ping the new g2: $_r;"
        fi
    else
        _fail="$_fail $(why_not g2 "$_rc" "'network up'");"
    fi
    if [ -z "$_fail" ]; then
        step recreate PASS "$_c (was $_old); g2 -> g1: ${_l#ibguest: }; $_d; stats: g2 state=$(stat_of g2 state) connects=$(stat_of g2 connects)"
    else
        step recreate FAIL "${_fail# }"
        diag g2 g1
    fi
}

# The hostile guest: each xen-fault= kind in turn, on seat g3.
HOSTILE_FAULTS="bad-ref bad-port huge-window read-only"
step_hostile() {
    _fail=""
    _seen=""
    for _fault in $HOSTILE_FAULTS; do
        write_cfg g3 "xen-fault=$_fault"
        if ! create g3; then
            _fail="$_fail $_fault: $CREATED;"
            continue
        fi
        eval "_id=\$DOMID_g3"
        # The guest gives up when the back end closes the device on it.
        wait_guest g3 "exit: no Xen channel" "$WAIT"
        _rc=$?
        _why=$(gline g3 'fatal:')
        if [ "$_rc" != 0 ] && [ "$_rc" != 2 ]; then
            _fail="$_fail $_fault: $(why_not g3 "$_rc" "the guest's give-up");"
        fi
        _bl=$(grep "guest g3 (domain $_id)\|guest g3: domain $_id" "$BLOG" | grep -i 'refused\|disconnect\|cannot\|fail' | tail -1 | sed 's/^\[[^]]*\] *//')
        [ -n "$_bl" ] || _fail="$_fail $_fault: the back end logged no refusal for domain $_id;"
        # A crash is a crash, not a poweroff (on_crash = preserve keeps it).
        _k=0
        while :; do
            _st=$(xl list ibguest-g3 2>/dev/null | awk 'NR == 2 { print $5 }')
            case "$_st" in *c*) break ;; esac
            [ "$_k" -ge 20 ] && break
            sleep 0.25
            _k=$((_k + 1))
        done
        case "$_st" in *c*) ;; *) _fail="$_fail $_fault: ibguest-g3 is '${_st:-gone}' in xl list, not crashed;" ;; esac
        xl destroy ibguest-g3 >/dev/null 2>&1
        _seen="$_seen $_fault: guest \"${_why#*fatal: }\" (xl state ${_st:-gone}), back end \"${_bl:-?}\";"
    done
    _refused=$(stat_of g3 xen_refused)
    _failed=$(stat_of g3 xen_failures)
    _n=0
    for _fault in $HOSTILE_FAULTS; do _n=$((_n + 1)); done
    [ $((${_refused:-0} + ${_failed:-0})) -ge "$_n" ] ||
        _fail="$_fail the back end counted ${_refused:-?} refused + ${_failed:-?} failed channels for g3, not $_n;"
    [ "$(stat_of g1 state)" = connected ] || _fail="$_fail g1 is $(stat_of g1 state), not connected;"
    if _r=$(ping_from_dom0 "$IP_g1"); then
        _g1="dom0 -> g1 still: $_r"
    else
        _fail="$_fail dom0 can no longer ping g1: $_r;"
    fi
    if [ -z "$_fail" ]; then
        step hostile PASS "${_seen# } g3 counters: xen_refused=$_refused xen_failures=$_failed; $_g1"
    else
        step hostile FAIL "${_fail# } (seen:$_seen)"
        diag g3 g1
    fi
}

# Connected mode (RFC 4755) between two Xen guests: the image asks for the
# big-slot pool with cm=on, the back end agrees on seats with
# max-rc-conns (and no port security), and the TCP stream goes over RC.
step_cm() {
    write_cfg g5 "cm=on"
    write_cfg g4 "cm=on send=$IP_g5:9:$BYTES"
    if ! create g5; then
        step cm FAIL "$CREATED"
        diag g5
        return
    fi
    if ! create g4; then
        step cm FAIL "$CREATED"
        diag g4 g5
        xl destroy ibguest-g5 >/dev/null 2>&1
        return
    fi
    _fail=""
    wait_guest g4 "connected mode agreed\|connected mode not agreed" "$WAIT"
    _rc=$?
    _agreed=$(gline g4 "connected mode agreed\|connected mode not agreed")
    if [ "$_rc" != 0 ]; then
        _fail="$(why_not g4 "$_rc" "the connected-mode answer");"
    elif ! echo "$_agreed" | grep -q "connected mode agreed"; then
        _fail="g4: ${_agreed#ibguest: };"
    fi
    if [ -z "$_fail" ]; then
        wait_guest g4 "sent $BYTES bytes sha256\|send failed" 180
        _rc=$?
        _sent=$(gline g4 "sent $BYTES bytes sha256\|send failed")
        _sum=$(echo "$_sent" | sed -n "s/.*sent $BYTES bytes sha256 \([0-9a-f]*\) .*/\1/p")
        [ "$_rc" = 0 ] || _fail="$(why_not g4 "$_rc" "the send result");"
        [ "$_rc" != 0 ] || [ -n "$_sum" ] || _fail="g4: ${_sent#ibguest: };"
    fi
    if [ -z "$_fail" ]; then
        wait_guest g4 "connected mode: " 10
        _rcl=$(gline g4 "connected mode: [0-9]")
        _rcb=$(echo "$_rcl" | sed -n 's/.*connected mode: [0-9]* packets, \([0-9]*\) bytes sent over RC.*/\1/p')
        [ "${_rcb:-0}" -ge $((BYTES * 9 / 10)) ] || _fail="only ${_rcb:-0} bytes went over RC: ${_rcl#ibguest: };"
        wait_guest g5 "discard from .*: $BYTES bytes sha256" 30
        _got=$(gline g5 "discard from .*: $BYTES bytes sha256" | sed -n 's/.* sha256 \([0-9a-f]*\).*/\1/p')
        [ "$_got" = "$_sum" ] || _fail="$_fail SHA-256 differs: g4 sent $_sum, g5 received ${_got:-nothing};"
    fi
    if [ -z "$_fail" ]; then
        step cm PASS "g4 -> g5 in connected mode: ${_sent#ibguest: }; ${_rcl#ibguest: }; SHA-256 equal on both"
    else
        step cm FAIL "${_fail# }"
        diag g4 g5
    fi
    xl destroy ibguest-g4 >/dev/null 2>&1
    xl destroy ibguest-g5 >/dev/null 2>&1
}

scenario() {
    : >"$DMESG"
    step_backend
    step_create
    step_up
    step_ping
    step_tcp
    step_http
    step_dom0_ping
    step_dom0_http
    step_linux_domu
    step_destroy
    step_recreate
    step_hostile
    step_cm

    echo "xen-test: ib-backend stats at the end:"
    ib-backend stats --control "$CONTROL" 2>&1 | indent
    echo "xen-test: xl list at the end:"
    xl list 2>&1 | indent
    for _c in /run/core.*; do
        # The core's notes name the program and its arguments.
        [ -f "$_c" ] && echo "xen-test: a program crashed and dumped core: $_c ($(wc -c <"$_c") bytes): $(strings -n 3 "$_c" | head -12 | tr '\n' ' ')"
    done
    pull_dmesg
    if backend_alive; then
        kill "$BACKEND_PID"
        wait "$BACKEND_PID"
    fi
    # The whole logs, for the host to save under target/xen-test/logs/.
    dump backend.log "$BLOG"
    dump xen-dmesg.log "$DMESG"
    for _g in g1 g2 g3; do dump "guest-$_g.log" "$(conlog "$_g")"; done
    dump xl-create-g1.log /run/xl-create-g1.log
    dump xl-create-g2.log /run/xl-create-g2.log
    dump "guest-$DOMU.log" "$DOMU_CON"
    dump "xl-create-$DOMU.log" "/run/xl-create-$DOMU.log"
    dump vif-ibgw.log /run/vif-ibgw.log
}
