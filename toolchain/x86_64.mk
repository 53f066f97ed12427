# Native host build. Read by the Makefile and sourced by toolchain/*.sh:
# plain KEY=value lines only.
EC_TRIPLET=
EC_CC=gcc
EC_PKG_CONFIG_LIBDIR=
EC_SYSROOT=
EC_QEMU=
# off_t and time_t are 64-bit already
EC_WIDE_TIME=0
