# shellcheck shell=sh
# shellcheck disable=SC2154 # _ip, _id and friends are set by eval in guests.sh
# A recreate stress for the Xen transport (not part of make test):
#   make xen-stress
#   XEN_TEST_SCENARIO=xentest/scenario-recreate.sh xentest/xen-test.sh
# The back end runs with seats g1 and g2. g1 is created once and stays up;
# then ibguest-g2 is created (pinging g1, as in scenario.sh's `recreate`),
# waited for, destroyed and reclaimed STRESS_N times (default 30). Each
# incarnation ends as one of:
#   up        `network up` and its pings answered
#   dir       the back end refused its grant directory (`its grant directory
#             is bad`): the failure this scenario was written to catch
#   refused   the back end refused it for another reason
#   stopped   the domain crashed or shut down first (its last line is shown)
#   timeout   nothing of the above within $WAIT s
#   qemu      it died of QEMU's nested-SVM triple fault (README.md); counted
#             apart, never a failure of ours
# and the guest's own self-checks are counted from its console: `directory
# page changed` (its directory page no longer holds what it wrote) and
# `clock stepped back` (the PV clock read behind Xen's stamp).
# The one step, `recreate-stress`, passes when every incarnation but the
# qemu ones came up.

# shellcheck source=xentest/guests.sh
. /guests.sh

# shellcheck disable=SC2034 # /init prints it
PLAN="boot backend recreate-stress"

GW=10.77.0.1
IP_g1=10.77.0.2
IP_g2=10.77.0.3
MEM=32
WAIT=60
N=$(arg xentest.n)
N=${N:-30}
CONTROL=/run/ib.sock
BLOG=/run/backend.log
DMESG=/run/xen-dmesg.log
BACKEND_PID=""

start_backend() {
    RUST_LOG=info ib-backend run --provider sim \
        --guest "name=g1,xen-domain=ibguest-g1,ip=$IP_g1" \
        --guest "name=g2,xen-domain=ibguest-g2,ip=$IP_g2" \
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

# count PATTERN FILE: lines matching (0 if none or no file).
count() { grep -c -- "$1" "$2" 2>/dev/null || true; }

# one_incarnation I: create g2, classify how it ends, destroy it, wait for
# the back end's reclaim. Sets _kind.
one_incarnation() {
    _dir0=$(count 'its grant directory is bad' "$BLOG")
    _ref0=$(count 'the worker disconnected it' "$BLOG")
    _rec0=$(count 'guest g2: domain .* destroyed' "$BLOG")
    if ! create g2; then
        _kind=stopped
        echo "STRESS $1: $CREATED"
    else
        wait_guest g2 'network up\|ibguest: fatal' "$WAIT"
        _rc=$?
        if [ "$_rc" = 0 ] && gline g2 'network up' | grep -q .; then
            wait_guest g2 "peer $IP_g1 answered\|peer $IP_g1 did not answer\|ping failed" "$WAIT"
            _kind=up
        elif [ "$(count 'its grant directory is bad' "$BLOG")" -gt "$_dir0" ]; then
            _kind=dir
        elif [ "$(count 'the worker disconnected it' "$BLOG")" -gt "$_ref0" ]; then
            _kind=refused
        elif [ "$_rc" = 1 ]; then
            _kind=timeout
        else
            _kind=stopped
        fi
    fi
    pull_dmesg
    eval "_id=\$DOMID_g2"
    # A triple fault with Xen's RIP or CS is QEMU's (guests.sh, triple_faults).
    if [ "$_kind" != up ] && grep -q " d${_id}v0 Triple fault" "$DMESG"; then
        case "$(vcpu_rip_cs "$_id" | tr ' ' :)" in
            0xffff82d04*:* | *:0x0000e008 | *:0xe008) _kind=qemu ;;
        esac
    fi
    if [ "$_kind" != up ]; then
        echo "STRESS $1: domid $_id: $_kind ($(state g2))"
        gshow g2 | tail -6 | indent
        grep "domain ${_id}[):; ]" "$BLOG" | tail -4 | indent
    fi
    xl destroy ibguest-g2 >/dev/null 2>&1
    # The back end reclaims a domain it had mapped; one it refused has
    # nothing to reclaim, but the seat must be free again before the next.
    _w=0
    while [ "$_w" -lt 100 ]; do
        [ "$(count 'guest g2: domain .* destroyed' "$BLOG")" -gt "$_rec0" ] && break
        [ "$_kind" != up ] && [ "$_w" -ge 10 ] && break
        sleep 0.2
        _w=$((_w + 1))
    done
}

scenario() {
    : >"$DMESG"
    if start_backend; then
        wait_file "$BLOG" 'ib-backend: provider' 10
        step backend PASS "ib-backend (pid $BACKEND_PID) up with seats g1 and g2"
    else
        step backend FAIL "ib-backend did not start: $(tail -3 "$BLOG" | tr '\n' ' ')"
        return
    fi
    write_cfg g1
    if ! create g1 || ! wait_guest g1 'network up' "$WAIT"; then
        step recreate-stress FAIL "g1 did not come up: $(gshow g1 | tail -1)"
        diag_dump
        return
    fi
    write_cfg g2 "peer=$IP_g1"
    _up=0 _dir=0 _refused=0 _stopped=0 _timeout=0 _qemu=0
    _t_stress=$(now)
    # (Not _i or _t: guests.sh's helpers use them.)
    _round=0
    while [ "$_round" -lt "$N" ]; do
        _round=$((_round + 1))
        one_incarnation "$_round"
        eval "_$_kind=\$((_$_kind + 1))"
        echo "STRESS $_round of $N: $_kind"
    done
    _changed=$(count 'directory page changed' "$(conlog g2)")
    _back=$(count 'clock stepped back' "$(conlog g2)")
    _kept=$(count 'could not be ended' "$(conlog g2)")
    _sum="$N incarnations of g2 in $(since "$_t_stress") s: up $_up, dir $_dir, refused $_refused, stopped $_stopped, timeout $_timeout, qemu $_qemu; guest self-checks: directory page changed $_changed, incarnations whose clock was corrected $_back, granted pages kept $_kept; g1 $(stat_line g1)"
    if [ $((_up + _qemu)) = "$N" ]; then
        step recreate-stress PASS "$_sum"
    else
        step recreate-stress FAIL "$_sum"
    fi
    diag_dump
}

stat_line() { ib-backend stats --control "$CONTROL" 2>/dev/null | grep "^guest $1 " | tr ' ' '\n' | grep '^state=' | head -1; }

diag_dump() {
    pull_dmesg
    dump backend.log "$BLOG"
    dump xen-dmesg.log "$DMESG"
    for _g in g1 g2; do dump "guest-$_g.log" "$(conlog "$_g")"; done
}
