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
