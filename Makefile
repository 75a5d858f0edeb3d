# qpool: a plain GNU Makefile.  `make`, `make check`, `make demo`, `make bench`,
# `make install PREFIX=/usr DESTDIR=...`, `make clean`.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CC ?= cc
PKGS := libxml-2.0
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

LIB_SRC := $(wildcard storage/*.c) $(wildcard drivers/*/*.c)
CLI_SRC := $(wildcard cli/*.c)
LIB_OBJ := $(LIB_SRC:.c=.o)
CLI_OBJ := $(CLI_SRC:.c=.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:.c=)
ALIASES := qvm-pool qvm-volume

all: qpool

BUILD_FLAGS := $(CC) $(CFLAGS) $(LDFLAGS) $(LDLIBS)
.build-flags: FORCE
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' >$@
$(LIB_OBJ) $(CLI_OBJ) $(UNIT_BIN): .build-flags

qpool: $(CLI_OBJ) libqpool.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) libqpool.a $(LDLIBS)

libqpool.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

tests/unit/test_%: tests/unit/test_%.c tests/unit/harness.h libqpool.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< libqpool.a $(LDLIBS)

deps:
	./scripts/install-deps.sh

build-tests: $(UNIT_BIN)

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

install: qpool
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 qpool $(DESTDIR)$(BINDIR)/qpool
	for a in $(ALIASES); do ln -sf qpool $(DESTDIR)$(BINDIR)/$$a; done

clean:
	rm -f qpool libqpool.a .build-flags $(LIB_OBJ) $(CLI_OBJ) $(UNIT_BIN) \
		$(shell find . -name '*.d')

.PHONY: all check check-asan check-valgrind unit build-tests demo bench install clean deps FORCE
-include $(shell find . -name '*.d' 2>/dev/null)
