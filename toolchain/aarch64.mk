# Cross build for aarch64 boards with Debian's cross gcc and multiarch -dev
# packages. Read by the Makefile and sourced by toolchain/*.sh: plain
# KEY=value lines only.
EC_TRIPLET=aarch64-linux-gnu
EC_CC=aarch64-linux-gnu-gcc
EC_PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
# qemu-user's -L prefix: the multiarch root, where the libc6:<arch> that the
# binary was linked against lives. The cross toolchain's own sysroot under
# /usr/<triplet> carries an older libc; mixing its ld.so with the multiarch
# libc makes threads hang under qemu.
EC_SYSROOT=/
EC_QEMU=qemu-aarch64-static
# off_t and time_t are 64-bit already
EC_WIDE_TIME=0
