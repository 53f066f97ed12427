# Cross build for armhf boards with Debian's cross gcc and multiarch -dev
# packages. Read by the Makefile and sourced by toolchain/*.sh: plain
# KEY=value lines only.
EC_TRIPLET=arm-linux-gnueabihf
EC_CC=arm-linux-gnueabihf-gcc
EC_PKG_CONFIG_LIBDIR=/usr/lib/arm-linux-gnueabihf/pkgconfig:/usr/share/pkgconfig
EC_SYSROOT=/usr/arm-linux-gnueabihf
EC_QEMU=qemu-arm-static
