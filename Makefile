# edgecap build. Plain make, no generated build system.
#
#   make                     build build/x86_64/edgecap (host)
#   make ARCH=aarch64        cross-build for a board (also ARCH=armhf)
#   make SAN=1               ASan + UBSan build in build/<arch>-san/
#   make check               build and run this ARCH's tests (qemu-user for boards)
#   make test                everything CI runs: lint, host, sanitizers, aarch64 and
#                            armhf under qemu; one summary line at the end
#   make demo                build, validate the example config, run the daemon
#   make lint                clang-format check, cppcheck
#   make bench               edgecap vs opusenc on 10 min of speech (not a test)
#   make image ARCH=aarch64  field image from Debian packages (build/<arch>/image/)
#                            (ARCH=armhf: Debian's armmp kernel)
#   make qemu-run ARCH=aarch64 [PROVISION=FILE|DIR]
#                            boot that image in qemu-system-aarch64 (TCG, console;
#                            ARCH=armhf: qemu-system-arm)
#   make test-system         the appliance end to end: flash.sh, and the image booted
#                            in qemu-system-aarch64 against the host's peers
#   make bench-image [AUDIO_SECONDS=30]
#                            edgecap's memory and CPU on the emulated board, next to
#                            opusenc in the same guest (not a test)
#   make clean
#
# Dependencies install themselves (toolchain/install-deps.sh); libcurl is built
# on mbedTLS from Debian's source package (toolchain/build-curl.sh).

ARCH ?= x86_64
SAN ?= 0
V ?= 0
CHECK_FLAGS ?=

include toolchain/$(ARCH).mk

ifeq ($(SAN),1)
BUILD := build/$(ARCH)-san
else
BUILD := build/$(ARCH)
endif
DEPS := build/$(ARCH)/deps
CURL := $(DEPS)/curl
DEPS_STAMP := build/.deps-$(ARCH)

CC := $(EC_CC)
ifeq ($(EC_PKG_CONFIG_LIBDIR),)
PKG_CONFIG := pkg-config
else
PKG_CONFIG := PKG_CONFIG_LIBDIR=$(EC_PKG_CONFIG_LIBDIR) pkg-config
endif
PKGS := alsa opus libopusenc inih libcjson

# Recursive (=) on purpose: pkg-config runs only after the dependency step has
# installed the -dev packages, so a fresh machine builds on the first try.
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS))
CMOCKA_CFLAGS = $(shell $(PKG_CONFIG) --cflags cmocka)
# PKCS#11 header only (hal/keystore_pkcs11.c dlopens the module; nothing links p11-kit).
P11_CFLAGS = $(shell $(PKG_CONFIG) --cflags p11-kit-1)
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka)

HARDEN_CFLAGS := -O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
HARDEN_LDFLAGS := -pie -Wl,-z,relro,-z,now
ifeq ($(SAN),1)
# FORTIFY's checks and ASan's interceptors overlap; ASan checks more.
HARDEN_CFLAGS := -O1 -g -fstack-protector-strong -fPIE -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=all
HARDEN_LDFLAGS += -fsanitize=address,undefined
endif

ifeq ($(EC_WIDE_TIME),1)
ARCH_CPPFLAGS := -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64
endif
CPPFLAGS_ALL = -Iinclude -I$(CURL)/include -DCURL_STATICLIB -D_GNU_SOURCE $(ARCH_CPPFLAGS) \
	$(PKG_CFLAGS) $(P11_CFLAGS)
CFLAGS_ALL = -std=c11 -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wvla -g $(HARDEN_CFLAGS) \
	-MMD -MP $(CFLAGS)
LDFLAGS_ALL = $(HARDEN_LDFLAGS) $(LDFLAGS)
LIBS = $(CURL)/lib/libcurl.a -lmbedtls -lmbedx509 -lmbedcrypto $(PKG_LIBS) -lpthread -lm

FW_SRCS := $(wildcard firmware/*.c) $(wildcard hal/*.c)
LIB_SRCS := $(filter-out firmware/main.c,$(FW_SRCS))
OBJS := $(FW_SRCS:%.c=$(BUILD)/obj/%.o)
# Tests link objects built with fault-injection seams compiled in.
TEST_LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/tobj/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
TEST_SUPPORT_OBJS := $(BUILD)/tobj/tests/unit/support.o
# Test tools (never shipped): e.g. spool_cat decrypts a segment for opusdec.
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOL_BINS := $(TOOL_SRCS:tests/tools/%.c=$(BUILD)/tools/%)

ifeq ($(V),1)
Q :=
else
Q := @
endif

.PHONY: all deps check check-build test demo lint format clean bench bench-image image qemu-run \
	test-system
# Objects are kept between links (they are not intermediate files).
.SECONDARY:
all: $(BUILD)/edgecap

$(DEPS_STAMP): toolchain/install-deps.sh
	$(Q)mkdir -p $(@D)
	$(Q)toolchain/install-deps.sh host $(if $(EC_TRIPLET),$(ARCH))
	$(Q)touch $@

$(CURL)/lib/libcurl.a: $(DEPS_STAMP) toolchain/build-curl.sh
	$(Q)toolchain/build-curl.sh $(ARCH) $(DEPS)

deps: $(CURL)/lib/libcurl.a

$(BUILD)/obj/%.o: %.c | $(CURL)/lib/libcurl.a
	@mkdir -p $(@D)
	@echo "  CC      $@"
	$(Q)$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/tobj/%.o: %.c | $(CURL)/lib/libcurl.a
	@mkdir -p $(@D)
	@echo "  CC      $@"
	$(Q)$(CC) $(CPPFLAGS_ALL) -DEC_FAULT_INJECTION -Itests/unit $(CMOCKA_CFLAGS) \
		$(CFLAGS_ALL) -c $< -o $@

$(BUILD)/edgecap: $(OBJS) $(CURL)/lib/libcurl.a
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $(OBJS) $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tobj/tests/unit/%.o $(TEST_LIB_OBJS) $(TEST_SUPPORT_OBJS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS) $(CMOCKA_LIBS)

$(BUILD)/tools/%: $(BUILD)/tobj/tests/tools/%.o $(TEST_LIB_OBJS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

# Build and run this ARCH's unit and system tests; TAP goes to
# $(BUILD)/results.tap and a summary line to the terminal.
# What check runs, built (tests/run-all.sh builds first, then runs
# configurations side by side).
check-build: $(BUILD)/edgecap $(UNIT_BINS) $(TOOL_BINS)

# Under qemu-arm every system test costs minutes of emulated CPU beside the
# aarch64 run: armhf runs the unit tests and the system tests where a 32-bit
# ABI can differ (time, sizes and offsets in the pipeline, spool, upload,
# audit, retention, certificates, config parsing). The Azure protocol logic
# (Speech, Entra, metrics, rotation, consent, systemd) runs natively, under
# valgrind and ASan, and on aarch64. SYSTEM_ONLY= runs them all.
# Which tests `check` runs: SYSTEM_ONLY / SYSTEM_SKIP name tests/system
# scripts (spaces or commas), reported skipped with SYSTEM_*_WHY; UNIT=0 runs
# no unit test; RESULTS_NAME=N keeps results in $(BUILD)/results-N/.
comma := ,
words_of = $(strip $(subst $(comma), ,$(1)))
# The host-side appliance tests (flashing, the field images booted under
# qemu-system-aarch64 and qemu-system-arm): `make test-system`, and in `make
# test` beside the native run (they wait on emulated CPU where it waits on
# peers).
HOST_SYSTEM_TESTS := flash image image_armhf
SYSTEM_SKIP_WHY ?= a host-side appliance test: make test runs it beside this run (make test-system)
SYSTEM_ONLY_WHY ?= not in the set this run takes
ifeq ($(ARCH),armhf)
SYSTEM_ONLY ?= cli check_config hardening run_daemon pipeline upload audit retention provision \
	secret_not_formattable
SYSTEM_ONLY_WHY := armhf runs the core system tests (Makefile SYSTEM_ONLY); this one runs \
	natively, under valgrind and ASan, and on aarch64
endif

check: $(BUILD)/edgecap $(UNIT_BINS) $(TOOL_BINS)
	$(Q)tests/run.sh --arch $(ARCH) --build $(BUILD) --qemu "$(EC_QEMU)" \
		--sysroot "$(EC_SYSROOT)" $(if $(SYSTEM_ONLY),--system-only "$(call words_of,$(SYSTEM_ONLY))" \
		--system-only-why "$(SYSTEM_ONLY_WHY)") \
		$(if $(SYSTEM_SKIP),--system-skip "$(call words_of,$(SYSTEM_SKIP))" \
		--system-skip-why "$(SYSTEM_SKIP_WHY)") $(if $(RESULTS_NAME),--results $(RESULTS_NAME)) \
		$(CHECK_FLAGS) $(if $(filter 0,$(UNIT)),,$(UNIT_BINS))

# What CI runs (.ci/run): every configuration, one summary.
test:
	$(Q)tests/run-all.sh $(if $(filter 1,$(SAN)),--san-only)

demo: $(BUILD)/edgecap
	$(Q)toolchain/install-deps.sh tools peers
	$(Q)toolchain/demo.sh $(BUILD)

# A benchmark, not a test: 10 min of speech through edgecap and opusenc
# (times, ratio, peak RSS, callgrind); prints a Markdown table for README.md.
bench: $(BUILD)/edgecap $(BUILD)/tools/spool_cat
	$(Q)toolchain/install-deps.sh tools peers
	$(Q)toolchain/bench.sh $(BUILD)

# A benchmark, not a test: the field image under qemu-system-aarch64 with a
# test-only overlay (opusenc); memory, boot to first upload, CPU per audio s.
bench-image:
	$(Q)toolchain/install-deps.sh host aarch64 tools peers image
	$(Q)$(MAKE) -s ARCH=x86_64 build/x86_64/edgecap
	$(Q)$(MAKE) -s ARCH=aarch64 image build/aarch64/tools/alsa_play
	$(Q)toolchain/bench-image.sh $(AUDIO_SECONDS)

# The field image (toolchain/image.sh): Debian's kernel and busybox, edgecap
# and exactly its libraries; prints the image's sha256 and size.
image: $(BUILD)/edgecap
	$(Q)toolchain/install-deps.sh image
	$(Q)toolchain/image.sh $(ARCH) $(BUILD)

# Boots a scratch copy of the image, with PROVISION (an edgecap.conf, or a
# directory holding it and the files it names) on its provisioning partition.
qemu-run: image
	$(Q)toolchain/qemu-run.sh $(BUILD)/image/edgecap-$(ARCH).img $(PROVISION)

# The host-side system tests alone (they also run inside `make test`, in the
# native configuration): results in build/x86_64/results-system/.
test-system:
	$(Q)toolchain/install-deps.sh host aarch64 armhf tools peers image
	$(Q)$(MAKE) -s ARCH=x86_64 SAN=0 check-build
	$(Q)EC_IMAGE_FULL=1 $(MAKE) -s ARCH=x86_64 SAN=0 check UNIT=0 RESULTS_NAME=system \
		SYSTEM_ONLY="$(HOST_SYSTEM_TESTS)" SYSTEM_ONLY_WHY="not a host-side appliance test"

lint: $(DEPS_STAMP)
	$(Q)toolchain/install-deps.sh tools
	$(Q)toolchain/lint.sh

format:
	$(Q)clang-format -i $(FW_SRCS) $(wildcard include/edgecap/*.h) $(wildcard tests/unit/*.[ch])

clean:
	rm -rf build/x86_64 build/x86_64-san build/aarch64 build/armhf build/.deps-*

-include $(OBJS:.o=.d) $(TEST_LIB_OBJS:.o=.d) $(UNIT_BINS:$(BUILD)/tests/%=$(BUILD)/tobj/tests/unit/%.d) \
	$(TEST_SUPPORT_OBJS:.o=.d) $(TOOL_BINS:$(BUILD)/tools/%=$(BUILD)/tobj/tests/tools/%.d)
