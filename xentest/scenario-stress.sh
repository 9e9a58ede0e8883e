# shellcheck shell=sh
# A boot stress for the image under Xen (not part of make test):
#   XEN_TEST_SCENARIO=xentest/scenario-stress.sh xentest/xen-test.sh
# creates and destroys one PVH domain STRESS_N times (default 40) with no back
# end and reports every boot that died before the guest's config line, with
# Xen's view of its CPU (xen-hvmctx).
# shellcheck disable=SC2034 # /init prints it
PLAN="stress"
N=$(arg xentest.n)
N=${N:-40}

scenario() {
    _bad=0
    _i=0
    while [ "$_i" -lt "$N" ]; do
        _i=$((_i + 1))
        cat >/etc/xen/s.cfg <<CFG
name = "ibguest-s"
type = "pvh"
kernel = "/guest.elf"
memory = 32
vcpus = 1
tsc_mode = "native"
on_poweroff = "destroy"
on_crash = "preserve"
on_reboot = "preserve"
cmdline = "ip=10.77.0.9/24 log=info"
CFG
        xl dmesg -c >/dev/null 2>&1
        _log=/var/log/xen/console/guest-ibguest-s.log
        _off=0
        [ -f "$_log" ] && _off=$(wc -c <"$_log")
        xl create /etc/xen/s.cfg >/dev/null 2>&1
        _id=$(xl domid ibguest-s 2>/dev/null)
        _n=0
        _ok=0
        while [ "$_n" -lt 40 ]; do
            # The config line: on the PV console (xenconsoled's log), or on
            # port 0xe9 if the PV console never came up.
            if tail -c +$((_off + 1)) "$_log" 2>/dev/null | grep -q 'config: ip=' ||
                xl dmesg 2>/dev/null | grep -q "(d$_id) \[.*config:"; then
                _ok=1
                break
            fi
            _st=$(xl list ibguest-s 2>/dev/null | awk 'NR == 2 { print $5 }')
            case "$_st" in *[sc]*) break ;; esac
            sleep 0.25
            _n=$((_n + 1))
        done
        if [ "$_ok" != 1 ]; then
            _bad=$((_bad + 1))
            echo "STRESS iteration $_i domid $_id: state $(xl list ibguest-s 2>/dev/null | awk 'NR == 2 { print $5 }')"
            xl dmesg | grep "(d$_id)\|d$_id" | tail -8
            xen-hvmctx "$_id" 2>&1 | head -60
            xenctx -s /dev/null "$_id" 2>&1 | head -20
        fi
        xl destroy ibguest-s >/dev/null 2>&1
    done
    echo "XEN-STEP stress $([ "$_bad" = 0 ] && echo PASS || echo FAIL) $_bad of $N boots failed ($(xl dmesg 2>/dev/null | grep -c 'Triple fault') triple faults in Xen's ring now)"
}
