# Cross build for aarch64 boards with Debian's cross gcc and multiarch -dev
# packages. Read by the Makefile and sourced by toolchain/*.sh: plain
# KEY=value lines only.
EC_TRIPLET=aarch64-linux-gnu
EC_CC=aarch64-linux-gnu-gcc
EC_PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
EC_SYSROOT=/usr/aarch64-linux-gnu
EC_QEMU=qemu-aarch64-static
