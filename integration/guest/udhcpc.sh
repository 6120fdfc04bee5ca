#!/bin/sh
# udhcpc's hook: $1 is the event, the lease is in the environment (ip, subnet, mask = prefix
# length, router, dns, mtu, domain, search, ...; lists are space-separated).
# Only IPv4 addresses are flushed: the link-local and SLAAC ones are the kernel's.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" broadcast "${broadcast:-+}" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    if [ -n "$router" ]; then
        set -- $router
        ip route add default via "$1" dev "$interface"
    fi
    : >/etc/resolv.conf
    [ -n "${search:-$domain}" ] && echo "search ${search:-$domain}" >>/etc/resolv.conf
    for server in $dns; do
        echo "nameserver $server" >>/etc/resolv.conf
    done
    # One line for the host to parse: key=value, lists joined with commas, absent keys left out.
    line=LEASE
    for key in ip subnet mask router dns mtu domain search broadcast serverid lease; do
        eval "value=\$$key"
        [ -n "$value" ] && line="$line $key=$(echo $value | tr ' ' ,)"
    done
    echo "$line"
    ;;
esac
exit 0
