#!/bin/sh
# First boot (arbiter-firstboot.service): take what arbiter-provision put in arbiter/ on the
# FAT boot partition, install it where the daemon and NetworkManager read it with private
# modes, and wipe it from the card WHATEVER happens next: FAT keeps no file modes, so every
# local user could read a key left there. Each file is overwritten before it is deleted (FAT
# rewrites a file's clusters in place). Then the config is checked; a failure is logged at
# priority err and shown on the board's status LED (fast blink), and the unit fails.
#
# ARBITER_ROOT (default: none) and ARBITER_USER (default: arbiter) let the tests run this on a
# tree of their own.
set -u
umask 077
root=${ARBITER_ROOT:-}
user=${ARBITER_USER:-arbiter}
fat=$root/boot/firmware/arbiter
etc=$root/etc/arbiter
failed=""

log() { echo "$1arbiter-firstboot: $2"; }  # "<3>" sets the journal priority (err)

put() {  # put SRC DEST OWNER: a copy with mode 0600, or a failure remembered
    [ -e "$1" ] || return 0
    install -m 0600 -o "$3" -g "$3" "$1" "$2" || failed="$failed install of ${1#"$fat"/};"
}

install -d -m 0700 -o "$user" -g "$user" "$etc" || failed="$failed $etc;"
for f in arbiter.toml site.key ups.password fence-ups.password; do
    put "$fat/$f" "$etc/$f" "$user"
done
if [ -d "$fat/snmp" ]; then
    install -d -m 0700 -o "$user" -g "$user" "$etc/snmp" || failed="$failed $etc/snmp;"
    for f in "$fat"/snmp/*; do put "$f" "$etc/snmp/" "$user"; done
fi
if [ -e "$fat/network.nmconnection" ]; then  # a static address; without it NetworkManager does DHCP
    nm=$root/etc/NetworkManager/system-connections
    install -d -m 0700 "$nm" && put "$fat/network.nmconnection" "$nm/arbiter-lan.nmconnection" root
    command -v nmcli >/dev/null && [ -z "$root" ] && nmcli connection reload >/dev/null 2>&1
fi

# wipe: overwrite, then delete; Raspberry Pi OS's firstboot deleted custom.toml (no secret in it)
find "$fat" -type f -exec shred -n 1 -z -u {} + || failed="$failed shred;"
rm -rf "$fat"
sync

if [ -z "$failed" ]; then
    "$root"/opt/arbiter/venv/bin/arbiterd check-config "$etc/arbiter.toml" || failed=" check-config of $etc/arbiter.toml;"
fi
if [ -n "$failed" ]; then
    log "<3>" "provisioning failed:$failed the secrets were wiped from the card all the same; provision it again"
    for led in "$root"/sys/class/leds/ACT "$root"/sys/class/leds/led0; do
        [ -d "$led" ] || continue
        echo timer >"$led/trigger" && echo 100 >"$led/delay_on" && echo 100 >"$led/delay_off"
        break
    done
    exit 1
fi
log "<5>" "provisioned: config and secrets in $etc (0600), wiped from the card"
