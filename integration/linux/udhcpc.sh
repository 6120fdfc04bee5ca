#!/bin/sh
# udhcpc's hook in the guest's namespace: apply address, MTU and default route, and print the
# lease as one "LEASE key=value ..." line.  /etc/resolv.conf is the host's here: never touched.
# UDHCPC_APPLY_MTU=no leaves the interface's MTU alone (the lease line still shows the offer).
# Only IPv4 addresses are flushed: the IPv6 ones (link-local, SLAAC) are not the lease's.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && [ "$UDHCPC_APPLY_MTU" != no ] && ip link set dev "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    line=LEASE
    for key in ip mask router dns mtu; do
        eval "value=\$$key"
        [ -n "$value" ] && line="$line $key=$(echo $value | tr ' ' ,)"
    done
    echo "$line"
    ;;
esac
exit 0
