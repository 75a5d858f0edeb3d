# qpool: a plain GNU Makefile.  `make`, `make check`, `make demo`, `make bench`,
# `make install PREFIX=/usr DESTDIR=...`, `make clean`.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CC ?= cc
PKGS := libxml-2.0 openssl zlib libzstd blkid libcryptsetup
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -MMD -MP \
	  -I. -Istorage $(shell pkg-config --cflags $(PKGS))
LDLIBS += $(shell pkg-config --libs $(PKGS))
# Sanitizer flags for both compiling and linking (see check-asan); a change of
# flags rebuilds everything through the .build-flags stamp.
SANFLAGS ?=
CFLAGS += $(SANFLAGS)
LDFLAGS += $(SANFLAGS)
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite

LIB_SRC := $(wildcard storage/*.c) $(wildcard drivers/*/*.c) $(wildcard backup/*.c)
CLI_SRC := $(wildcard cli/*.c)
LIB_OBJ := $(LIB_SRC:.c=.o)
CLI_OBJ := $(CLI_SRC:.c=.o)
FUSE_SRC := $(wildcard fuse/*.c)
FUSE_OBJ := $(FUSE_SRC:.c=.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:.c=)
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:.c=)
ALIASES := qvm-pool qvm-volume qvm-backup qvm-backup-restore

all: qpool qpoold

BUILD_FLAGS := $(CC) $(CFLAGS) $(LDFLAGS) $(LDLIBS)
.build-flags: FORCE
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' >$@
$(LIB_OBJ) $(CLI_OBJ) $(UNIT_BIN) $(TOOL_BIN) $(FUSE_OBJ): .build-flags

qpool: $(CLI_OBJ) libqpool.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) libqpool.a $(LDLIBS)

# qpoold, the FUSE view of the volumes (libfuse3).
$(FUSE_OBJ): CFLAGS += $(shell pkg-config --cflags fuse3)
qpoold: $(FUSE_OBJ) libqpool.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(FUSE_OBJ) libqpool.a $(LDLIBS) $(shell pkg-config --libs fuse3)

libqpool.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

tests/unit/test_%: tests/unit/test_%.c tests/unit/harness.h libqpool.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< libqpool.a $(LDLIBS)

# Small programs that integration tests drive (e.g. bk_scrypt_tool).
tests/tools/%: tests/tools/%.c libqpool.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< libqpool.a $(LDLIBS)

# libFuzzer targets, built with clang and ASan/UBSan straight from the
# sources they test; each runs FUZZ_SECONDS from its seeds, and keeps what
# it finds in tests/fuzz/corpus/<target>/.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 30
FUZZ_BIN := $(patsubst %.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_LIB := backup/bk_secure.c backup/bk_scrypt.c backup/bk_header.c backup/bk_tar.c \
	backup/bk_compress.c storage/common.c
FUZZ_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
	       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. -Istorage
tests/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB) $(wildcard backup/bk_*.h) storage/qpool.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(shell pkg-config --cflags openssl zlib libzstd) -o $@ $< $(FUZZ_LIB) \
		$(shell pkg-config --libs openssl zlib libzstd)

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
		t=$${f#tests/fuzz/}; mkdir -p tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		./$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=tests/fuzz/corpus/$$t- \
			tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t 2>tests/fuzz/corpus/$$t.log || \
			{ tail -n 40 tests/fuzz/corpus/$$t.log; exit 1; }; \
		grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' \
			tests/fuzz/corpus/$$t.log; \
	done

deps:
	./scripts/install-deps.sh

build-tests: $(UNIT_BIN) $(TOOL_BIN)

unit: all build-tests
	./tests/run.sh unit

# Every test: unit tests, then the integration tests on real filesystems.
check: deps
	$(MAKE) all build-tests
	./tests/run.sh

# The same tests against a build with AddressSanitizer and UBSan (rebuilds
# everything; the next plain `make` rebuilds it back).
check-asan: deps
	$(MAKE) SANFLAGS="$(ASAN_FLAGS)" all build-tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		./tests/run.sh

# The unit tests under valgrind (plain build).
check-valgrind: deps
	$(MAKE) SANFLAGS= all build-tests
	QP_UNIT_WRAPPER="$(VALGRIND)" ./tests/run.sh unit

demo: deps
	$(MAKE) all
	./scripts/demo.sh

bench: deps
	$(MAKE) all
	./bench/vm-start.sh
	./bench/fuse-io.sh
	./bench/backup.sh

install: qpool qpoold
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 qpool $(DESTDIR)$(BINDIR)/qpool
	install -m 0755 qpoold $(DESTDIR)$(BINDIR)/qpoold
	for a in $(ALIASES); do ln -sf qpool $(DESTDIR)$(BINDIR)/$$a; done

clean:
	rm -f qpool qpoold libqpool.a .build-flags $(LIB_OBJ) $(CLI_OBJ) $(FUSE_OBJ) $(UNIT_BIN) $(TOOL_BIN) $(FUZZ_BIN) \
		$(shell find . -name '*.d')

.PHONY: all check check-asan check-valgrind unit build-tests demo bench install clean deps fuzz FORCE
-include $(shell find . -name '*.d' 2>/dev/null)
