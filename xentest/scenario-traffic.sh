# shellcheck shell=sh
# A traffic stress for chasing the nested-SVM fault (not part of make test):
#   XEN_TEST_SCENARIO=xentest/scenario-traffic.sh xentest/xen-test.sh
# ib-backend (sim) with two seats; g2 serves, g1 is created TRAFFIC_N times
# (default 12), each time pinging g2, sending it TRAFFIC_BYTES (default 2 MiB)
# and fetching its page, while dom0 pings g2 five times a second. Every
# domain that dies is reported with Xen's view of its CPU (xen-hvmctx).
# shellcheck source=xentest/guests.sh
. /guests.sh
# shellcheck disable=SC2034 # /init prints it
PLAN="traffic"
N=${TRAFFIC_N:-12}
BYTES=${TRAFFIC_BYTES:-2097152}
GW=10.77.0.1
IP_g1=10.77.0.2
IP_g2=10.77.0.3
MEM=32
WAIT=60
CONTROL=/run/ib.sock
BLOG=/run/backend.log
DMESG=/run/xen-dmesg.log

died() { # NAME: report a dead domain, 0 if it was dead
    alive "$1" && return 1
    eval "_id=\$DOMID_$1"
    echo "TRAFFIC ibguest-$1 (domid $_id) died: $(state "$1"); Xen: $(grep "d${_id}v0\|(d$_id)" "$DMESG" | tail -2 | tr '\n' ' ')"
    xen-hvmctx "$_id" 2>&1 | grep -i 'rip\|cr3\|cs ' | head -4 | indent
    return 0
}

scenario() {
    : >"$DMESG"
    RUST_LOG=info ib-backend run --provider sim \
        --guest "name=g1,xen-domain=ibguest-g1,ip=$IP_g1" \
        --guest "name=g2,xen-domain=ibguest-g2,ip=$IP_g2" \
        --gateway "ibgw0=$GW/24" --control "$CONTROL" >"$BLOG" 2>&1 &
    BACKEND_PID=$!
    wait_file "$BLOG" 'ib-backend: provider' 30
    write_cfg g2 ""
    create g2
    wait_guest g2 'network up' "$WAIT"
    echo "TRAFFIC g2 (domid $DOMID_g2) is running at: $(vcpu_rip_cs "$DOMID_g2") (rip, cs)"
    ping -i 0.2 "$IP_g2" >/dev/null 2>&1 &
    _pinger=$!
    _dead=0
    _ok=0
    _i=0
    while [ "$_i" -lt "$N" ]; do
        _i=$((_i + 1))
        write_cfg g1 "peer=$IP_g2 send=$IP_g2:9:$BYTES fetch=http://$IP_g2/"
        create g1
        wait_guest g1 "sent $BYTES bytes sha256\|send failed" 120
        _rc=$?
        if [ "$_rc" = 0 ]; then
            _ok=$((_ok + 1))
        else
            echo "TRAFFIC round $_i: $(why_not g1 "$_rc" "the send result")"
        fi
        died g1 && _dead=$((_dead + 1))
        if died g2; then
            _dead=$((_dead + 1))
            xl destroy ibguest-g2 >/dev/null 2>&1
            create g2
            wait_guest g2 'network up' "$WAIT"
        fi
        xl destroy ibguest-g1 >/dev/null 2>&1
    done
    kill "$_pinger" 2>/dev/null
    pull_dmesg
    step traffic "$([ "$_dead" = 0 ] && echo PASS || echo FAIL)" "$_ok of $N rounds sent $BYTES bytes; $_dead domains died; $(grep -c 'Triple fault' "$DMESG") triple faults in Xen's log"
}
