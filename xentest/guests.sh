# shellcheck shell=sh
# shellcheck disable=SC2154 # _ip, _off, _id and friends are set by eval
# Helpers both xen-test scenarios use (sourced by scenario.sh and
# scenario-rdma.sh, from /guests.sh in dom0): the guests' consoles (both
# xenconsoled's log, the PV console, and the `(dN)` lines of `xl dmesg`, port
# 0xe9), waiting for a guest's line, the back end's log and stats, and the
# domains' xl configs. They use the scenario's $DMESG, $BLOG, $CONTROL,
# $MEM, $GW and IP_<name>, and dom0-init.sh's indent/secs/now/since.
# --- guests' consoles ------------------------------------------------------------
# Xen's console ring, drained into one file (so it never wraps); every new
# triple fault in it is looked at (triple_faults).
pull_dmesg() {
    xl dmesg -c >>"$DMESG" 2>/dev/null
    triple_faults
}
# triple_faults: for each domain Xen reported a triple fault for
# (`(XEN) dNv0 Triple fault - invoking HVM shutdown action ...`) that has not
# been looked at yet, one `XEN-TRIPLE` line on the console with the dead
# vCPU's RIP and CS as `xen-hvmctx` shows them, and a verdict:
#  - `qemu`: the RIP is in Xen's own text (0xffff82d04xxxxxxx, the instruction
#    after Xen's VMRUN) or the CS is Xen's hypervisor selector 0xe008. No
#    guest runs there: QEMU's emulation of nested SVM wrote Xen's state into
#    the guest's VMCB (xentest/README.md, "A domain that dies of a triple
#    fault"). xen-test.sh runs the VM again when a failed run has one.
#  - `guest`: anything else: the guest's own RIP and CS. Its full saved
#    state (`xen-hvmctx`) follows as `XEN-HVMCTX` lines. xen-test.sh runs the
#    VM again once for it, not twice (xentest/README.md).
# The domains keep their state for this: on_reboot = "preserve".
# rip_cs_of TEXT: "RIP CS" of vCPU 0 in xen-hvmctx's output TEXT ("? ?" if
# it has none); vcpu_rip_cs DOMID: the same for the domain, read now.
rip_cs_of() {
    _rip=$(echo "$1" | grep -o 'rip 0x[0-9a-f]*' | head -1 | cut -d' ' -f2)
    _cs=$(echo "$1" | grep -o '[[:space:]]cs 0x[0-9a-f]*' | head -1 | sed 's/.*cs //')
    echo "${_rip:-?} ${_cs:-?}"
}
vcpu_rip_cs() {
    rip_cs_of "$(xen-hvmctx "$1" 2>&1)"
}
TRIPLE_SEEN=" "
triple_faults() {
    for _td in $(sed -n 's/.* d\([0-9]*\)v[0-9]* Triple fault.*/\1/p' "$DMESG" 2>/dev/null | sort -un); do
        case "$TRIPLE_SEEN" in *" $_td "*) continue ;; esac
        TRIPLE_SEEN="$TRIPLE_SEEN$_td "
        _tctx=$(xen-hvmctx "$_td" 2>&1)
        set -- $(rip_cs_of "$_tctx")
        _trip=$1
        _tcs=$2
        _tname=$(xl list 2>/dev/null | awk -v id="$_td" '$2 == id { print $1 }')
        case "$_trip:$_tcs" in
            0xffff82d04*:* | *:0x0000e008 | *:0xe008) _tv=qemu ;;
            *) _tv=guest ;;
        esac
        echo "XEN-TRIPLE domid $_td name ${_tname:-?} rip ${_trip:-?} cs ${_tcs:-?} verdict $_tv"
        # The whole saved state of a `guest` one (its CR3, IDTR, GDTR, TR and
        # pending event tell a fault of the guest's from state the
        # emulation wrote; xentest/README.md), for whoever looks next.
        if [ "$_tv" = guest ]; then
            echo "$_tctx" | head -80 | sed "s/^/XEN-HVMCTX d$_td | /"
        fi
    done
}
conlog() { echo "/var/log/xen/console/guest-ibguest-$1.log"; }
# pvcon NAME: this incarnation's PV console (xenconsoled's log, from where
# it was when the domain was created); e9log NAME: its (dN) lines in xl dmesg
# (port 0xe9); glog NAME: both, which is what the waits look at.
pvcon() {
    eval "_off=\${OFF_$1:-0}"
    # shellcheck disable=SC2154 # set by the eval
    [ -f "$(conlog "$1")" ] && tail -c +$((_off + 1)) "$(conlog "$1")" | tr -d '\r'
}
e9log() {
    eval "_id=\${DOMID_$1:-none}"
    grep "(d$_id) " "$DMESG" 2>/dev/null | sed 's/^.*(d[0-9]*) //' | tr -d '\r'
}
glog() {
    pvcon "$1"
    e9log "$1"
}
# gshow NAME: the guest's lines once: the PV console if it has any, else the
# xl dmesg lines.
gshow() {
    if [ -n "$(pvcon "$1" | head -1)" ]; then
        echo "(PV console, $(conlog "$1"))"
        pvcon "$1"
    else
        echo "(xl dmesg lines (d$(eval "echo \${DOMID_$1:-?}")), no PV console output)"
        e9log "$1"
    fi
}
# alive NAME: the domain exists and has not shut down, crashed or died.
alive() {
    _st=$(xl list "ibguest-$1" 2>/dev/null | awk 'NR == 2 { print $5 }')
    [ -n "$_st" ] && ! echo "$_st" | grep -q '[scd]'
}
# wait_guest NAME PATTERN SECONDS [EXCLUDE]: 0 when the guest printed a line
# matching PATTERN (and not EXCLUDE), 1 on timeout, 2 if the domain stopped
# first.
wait_guest() {
    _end=$(($(secs) + $3))
    _ex=${4:-^\$^}
    _n=0
    while :; do
        pull_dmesg
        glog "$1" | grep -v -- "$_ex" | grep -q -- "$2" && return 0
        # xl is not free under TCG: look at the domain's state every 2 s.
        if [ $((_n % 4)) = 0 ] && ! alive "$1"; then
            sleep 1
            pull_dmesg
            glog "$1" | grep -v -- "$_ex" | grep -q -- "$2" && return 0
            return 2
        fi
        [ "$(secs)" -ge "$_end" ] && return 1
        _n=$((_n + 1))
        sleep 0.5
    done
}
# gline NAME PATTERN: the guest's last line matching PATTERN.
gline() { glog "$1" | grep -- "$2" | tail -1; }
# why_not NAME RC WHAT: a reason for a failed wait_guest.
why_not() {
    case "$2" in
        2) echo "ibguest-$1 stopped before $3 ($(state "$1")); its last line: $(gshow "$1" | tail -1)" ;;
        *) echo "no $3 from ibguest-$1 within $WAIT s; its last line: $(gshow "$1" | tail -1)" ;;
    esac
}
state() {
    _l=$(xl list "ibguest-$1" 2>/dev/null | awk 'NR == 2 { print "domid " $2 ", state " $5 }')
    echo "${_l:-no such domain}"
}
# wait_file FILE PATTERN SECONDS
wait_file() {
    _i=0
    while [ "$_i" -lt $(($3 * 5)) ]; do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.2
        _i=$((_i + 1))
    done
    return 1
}
# dump NAME FILE: the whole file, for the host to save as logs/dom0-NAME.
# Each line is prefixed with XF| (Xen's own console lines may come in
# between); the line count lets the host see whether the console dropped any.
dump() {
    [ -f "$2" ] || return 0
    echo "XEN-FILE $1 $(tr -d '\r' <"$2" | wc -l)"
    tr -d '\r' <"$2" | sed 's/^/XF|/'
    echo "XEN-END-FILE"
}
backend_alive() { [ -n "$BACKEND_PID" ] && kill -0 "$BACKEND_PID" 2>/dev/null; }
# bline PATTERN: the back end's last log line matching PATTERN, without
# env_logger's "[time LEVEL target] " prefix.
bline() { grep -- "$1" "$BLOG" | tail -1 | sed 's/^\[[^]]*\] *//'; }
# write_cfg NAME EXTRA-ARGS: /etc/xen/ibguest-NAME.cfg. The guest's command
# line may have commas (only Xen's module strings may not). A crash, and a
# triple fault (a reboot to Xen), leave the domain in `xl list` for a look.
# tsc_mode = "native": with Xen's default mode on this (QEMU TCG) CPU, which
# has no invariant TSC, Xen intercepts every RDTSC of the guest, and the
# guest reads its PV clock with RDTSC on every pass of its loop. A CI run
# saw ibguest-g1 triple-fault on that RDTSC (guest RIP in
# guest::xen::clock::now_nanos) under QEMU 7.2's nested SVM; see README.md.
write_cfg() {
    eval "_ip=\$IP_$1"
    cat >"/etc/xen/ibguest-$1.cfg" <<EOF
name = "ibguest-$1"
type = "pvh"
kernel = "/guest.elf"
memory = $MEM
vcpus = 1
tsc_mode = "native"
on_poweroff = "destroy"
on_crash = "preserve"
on_reboot = "preserve"
cmdline = "ip=$_ip/24 gw=$GW services=echo,http,discard log=info name=$1${2:+ $2}"
EOF
}

# create NAME: xl create, then wait for the guest's first line; sets
# DOMID_NAME, OFF_NAME and CREATED (what it did). A domain that dies before
# its first line (a triple fault in early boot under nested TCG: seen about
# once in a hundred creates, with nothing on its console) is shown with
# xen-hvmctx, destroyed and created once more; CREATED says so.
create() {
    create_once "$1" || return 1
    wait_guest "$1" 'ibguest: booted' 20
    _brc=$?
    [ "$_brc" = 0 ] && return 0
    eval "_bid=\$DOMID_$1"
    _bst=$(state "$1")
    echo "xen-test: ibguest-$1 (domid $_bid) died before its first line ($_bst); Xen said: $(grep "d${_bid}v0\|(d$_bid)" "$DMESG" | tail -3 | tr '\n' ' ')"
    xen-hvmctx "$_bid" 2>&1 | grep -i 'rip\|rsp\|cr[0234]\|efer\|cs ' | head -12 | indent
    xl destroy "ibguest-$1" >/dev/null 2>&1
    _first="domid $_bid died before its first line ($_bst)"
    create_once "$1" || return 1
    CREATED="$CREATED (retried: $_first)"
    wait_guest "$1" 'ibguest: booted' 20
}

create_once() {
    _f=$(conlog "$1")
    if [ -f "$_f" ]; then eval "OFF_$1=$(wc -c <"$_f")"; else eval "OFF_$1=0"; fi
    eval "DOMID_$1=none"
    pull_dmesg
    _t=$(now)
    xl create "/etc/xen/ibguest-$1.cfg" >"/run/xl-create-$1.log" 2>&1
    _rc=$?
    _took=$(since "$_t")
    _id=$(xl domid "ibguest-$1" 2>/dev/null)
    eval "DOMID_$1=${_id:-none}"
    if [ "$_rc" = 0 ]; then
        CREATED="ibguest-$1 domid $_id in $_took s"
        return 0
    fi
    echo "xen-test: xl create ibguest-$1 exited with $_rc:"
    indent <"/run/xl-create-$1.log"
    tail -5 "/var/log/xen/xl-ibguest-$1.log" 2>/dev/null | indent
    # xl's daemonized child that watches the domain (for on_poweroff and
    # on_crash) died (SIGSEGV, SIGABRT) twice in about 45 creates before Xen
    # ran with spec-ctrl=eager-fpu (see README.md); the domain itself was
    # there and ran.
    if [ -n "$_id" ] && grep -q 'monitoring daemonizing child' "/run/xl-create-$1.log"; then
        CREATED="ibguest-$1 domid $_id in $_took s (xl create rc $_rc: its domain-monitoring child died; the domain runs)"
        return 0
    fi
    CREATED="xl create ibguest-$1 failed (rc $_rc): $(grep -v '^Parsing config' "/run/xl-create-$1.log" | tail -2 | tr '\n' ' ')"
    return 1
}

# ping_from_dom0 ADDR: 3 pings; 0 if any was answered. busybox ping exits 1
# with -w when fewer than -c came back, but under TCG on a loaded machine
# (round trips of half a second were seen) one ping in three can be lost on
# the way while the path is fine: the summary line shows the loss.
ping_from_dom0() {
    ping -c 3 -w 20 "$1" >/run/ping.log 2>&1
    _sum=$(grep 'packets transmitted' /run/ping.log)
    _rtt=$(sed -n 's/.*min\/avg\/max = //p' /run/ping.log)
    echo "${_sum:-$(tail -1 /run/ping.log)}${_rtt:+, rtt min/avg/max $_rtt}"
    echo "$_sum" | grep -q ' [1-9][0-9]* packets received'
}
