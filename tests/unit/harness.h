/* A tiny header-only test harness for qpool's unit tests.
 *
 *	#include "harness.h"
 *
 *	TEST(parses_sizes)
 *	{
 *		uint64_t n;
 *		CHECK_EQ_INT(qp_parse_size("1Ki", &n), 0);
 *		CHECK_EQ_INT(n, 1024);
 *		if (access("/dev/fuse", F_OK))
 *			SKIP("no /dev/fuse");
 *	}
 *
 *	int main(void)
 *	{
 *		RUN(parses_sizes);
 *		return harness_done();
 *	}
 *
 * Each RUN prints "ok - name", "not ok - name" or "ok - name # SKIP reason".
 * A failed CHECK prints file:line and the values to stderr, marks the current
 * test failed and carries on.  harness_done() prints "N passed, N failed,
 * N skipped" and returns 0 when nothing failed, else 1.
 */
#ifndef QPOOL_TESTS_HARNESS_H
#define QPOOL_TESTS_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* unused: a test file need not use every macro */
static int harness_passed __attribute__((unused));
static int harness_failed __attribute__((unused));
static int harness_skipped __attribute__((unused));
static int harness_cur_failed __attribute__((unused));
static const char *harness_cur_skip __attribute__((unused));
static char harness_skip_buf[256] __attribute__((unused));

#define TEST(name) static void name(void)

#define RUN(name)                                                                                  \
	do {                                                                                       \
		harness_cur_failed = 0;                                                            \
		harness_cur_skip = NULL;                                                           \
		name();                                                                            \
		fflush(stderr);                                                                    \
		if (harness_cur_failed) {                                                          \
			harness_failed++;                                                          \
			printf("not ok - %s\n", #name);                                            \
		} else if (harness_cur_skip) {                                                     \
			harness_skipped++;                                                         \
			printf("ok - %s # SKIP %s\n", #name, harness_cur_skip);                    \
		} else {                                                                           \
			harness_passed++;                                                          \
			printf("ok - %s\n", #name);                                                \
		}                                                                                  \
		fflush(stdout);                                                                    \
	} while (0)

#define harness_fail_at(...)                                                                       \
	do {                                                                                       \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                    \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fputc('\n', stderr);                                                               \
		harness_cur_failed = 1;                                                            \
	} while (0)

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			harness_fail_at("check failed: %s", #cond);                                \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
	do {                                                                                       \
		long long harness_a_ = (long long)(a);                                             \
		long long harness_b_ = (long long)(b);                                             \
		if (harness_a_ != harness_b_)                                                      \
			harness_fail_at("check failed: %s == %s (%lld != %lld)", #a, #b,           \
					harness_a_, harness_b_);                                   \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
	do {                                                                                       \
		const char *harness_a_ = (a);                                                      \
		const char *harness_b_ = (b);                                                      \
		if (!harness_a_ || !harness_b_ ? harness_a_ != harness_b_ :                        \
						 strcmp(harness_a_, harness_b_) != 0)              \
			harness_fail_at("check failed: %s == %s (\"%s\" != \"%s\")", #a, #b,       \
					harness_a_ ? harness_a_ : "(null)",                        \
					harness_b_ ? harness_b_ : "(null)");                       \
	} while (0)

/* Ends the current test as skipped (unless a check already failed). */
#define SKIP(reason)                                                                               \
	do {                                                                                       \
		snprintf(harness_skip_buf, sizeof(harness_skip_buf), "%s", (reason));              \
		harness_cur_skip = harness_skip_buf;                                               \
		return;                                                                            \
	} while (0)

static inline int harness_done(void)
{
	printf("%d passed, %d failed, %d skipped\n", harness_passed, harness_failed,
	       harness_skipped);
	fflush(stdout);
	return harness_failed ? 1 : 0;
}

#endif
