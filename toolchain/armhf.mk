# Cross build for armhf boards with Debian's cross gcc and multiarch -dev
# packages. Read by the Makefile and sourced by toolchain/*.sh: plain
# KEY=value lines only.
EC_TRIPLET=arm-linux-gnueabihf
EC_CC=arm-linux-gnueabihf-gcc
EC_PKG_CONFIG_LIBDIR=/usr/lib/arm-linux-gnueabihf/pkgconfig:/usr/share/pkgconfig
# qemu-user's -L prefix: the multiarch root, where the libc6:<arch> that the
# binary was linked against lives. The cross toolchain's own sysroot under
# /usr/<triplet> carries an older libc; mixing its ld.so with the multiarch
# libc makes threads hang under qemu.
EC_SYSROOT=/
EC_QEMU=qemu-arm-static
# 1: build with 64-bit file offsets and time (-D_FILE_OFFSET_BITS=64
# -D_TIME_BITS=64) on this 32-bit board: readdir must not fail with EOVERFLOW
# on 64-bit directory cookies (ext4 under a 64-bit kernel, qemu-user here),
# and the clock must run past 2038 on a device that stays for years.
EC_WIDE_TIME=1
