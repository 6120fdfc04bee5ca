#!/bin/sh
# ISC dhclient's hook (-sf) in the guest's namespace: apply a lease's address and default
# route, as dhclient-script would, and nothing else: /etc/resolv.conf is the host's here.
case "$reason" in
PREINIT)
    ip link set dev "$interface" up
    ;;
BOUND | RENEW | REBIND | REBOOT)
    ip addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    [ -n "$new_routers" ] && ip route replace default via "${new_routers%% *}" dev "$interface"
    ;;
EXPIRE | FAIL | RELEASE | STOP)
    ip addr flush dev "$interface"
    ;;
esac
exit 0
