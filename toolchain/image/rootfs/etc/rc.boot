#!/bin/sh
# Second stage boot (busybox init's sysinit): clock, network, test hooks.
# The mounts were made by the initramfs; the root is read-only, /run and /tmp
# are tmpfs, /etc/edgecap (provisioning) and /var/lib/edgecap (data) writable.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
say() { echo "edgecap-boot: $*"; }

# The clock: the RTC (the kernel read it already; again for boards whose RTC
# driver came up late). edgecap-supervise refuses to start before the build date.
hwclock -s -u 2>/dev/null || say "no RTC: the clock starts at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "edgecap $(cat /etc/edgecap-version), clock $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# The data partition (flash.sh grows it to the card): its size and room.
df -k /var/lib/edgecap 2>/dev/null | awk 'NR == 2 && $6 == "/var/lib/edgecap" {
    printf "edgecap-boot: data partition %s: %d MiB, %d MiB free\n", $6, $2 / 1024, $4 / 1024 }'

hostname edgecap
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    # One quick try in the foreground so that the first upload finds a route;
    # then in the background until a lease comes.
    udhcpc -i eth0 -b -t 5 -T 1 -A 5 -S -s /usr/share/udhcpc/default.script -p /run/udhcpc.pid ||
        say "no DHCP lease on eth0 yet"
else
    say "no eth0: uploads wait for a network"
fi

# Hooks that the boot chain put into the initramfs (tests): run in the background.
for f in /run/extra/rc.d/*; do
    [ -x "$f" ] && "$f" &
done
exit 0
