/* Unit tests of the lvm_thin driver's host-side parts: device-mapper name
 * mangling, vid parsing, revision names and their order, parsing of LVM's
 * report from canned text, the cache kept in step with renames, removals and
 * snapshots, and pool options.  The host has no device-mapper, so the LVM
 * commands themselves are tested in the VM (tests/vm/guest/); where the lvm
 * tool is installed, a missing volume group is checked against it for real,
 * with the command line recorded through QPOOL_RUN_LOG.
 */
#include "qpool.h"
#include "drivers/lvm-thin/lvmthin_internal.h"
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A report as `lvm lvs` prints it for a pool with a template, a running
 * AppVM and two revisions. */
static const char canned[] = "  qpool|||twi-aotz--|2147483648|12.50|4194304|7.03\n"
			     "  vm-t-root|qpool||Vwi-a-tz--|10737418240|1.00||\n"
			     "  vm-t-root-1700000005-back|qpool||Vwi---tz-k|10737418240|0.98||\n"
			     "  vm-t-root-1700000001-back|qpool||Vwi---tz-k|10737418240|0.5||\n"
			     "  vm-t-root-17x-back|qpool||Vwi---tz-k|10737418240|0.5||\n"
			     "  vm-a-root-snap|qpool|vm-t-root|Vwi-a-tz--|10737418240|1,00||\n"
			     "  vm-t-private|qpool||Vwi-a-tz--|2147483648|||\n"
			     "\n";

TEST(mangles_dm_names)
{
	char *p = lvmthin_dm_path("qvg", "vm-a-root-snap");

	CHECK_EQ_STR(p, "/dev/mapper/qvg-vm--a--root--snap");
	free(p);
	p = lvmthin_dm_path("my-vg", "lv");
	CHECK_EQ_STR(p, "/dev/mapper/my--vg-lv");
	free(p);
	p = lvmthin_dm_path("a--b", "-");
	CHECK_EQ_STR(p, "/dev/mapper/a----b---");
	free(p);
}

TEST(validates_names)
{
	CHECK(lvmthin_name_valid("qubes_dom0"));
	CHECK(lvmthin_name_valid("vm-a.b+c_d"));
	CHECK(!lvmthin_name_valid("-a"));
	CHECK(!lvmthin_name_valid(""));
	CHECK(!lvmthin_name_valid(".."));
	CHECK(!lvmthin_name_valid("a/b"));
	CHECK(!lvmthin_name_valid("a b"));
	CHECK(!lvmthin_name_valid("a|b"));
}

TEST(splits_vids)
{
	struct qp_err err = { 0 };
	char *vg, *lv;

	CHECK_EQ_INT(lvmthin_vid_split("qvg/vm-a-private", &vg, &lv, &err), 0);
	CHECK_EQ_STR(vg, "qvg");
	CHECK_EQ_STR(lv, "vm-a-private");
	free(vg);
	free(lv);
	CHECK_EQ_INT(lvmthin_vid_split("novg", &vg, &lv, &err), -EINVAL);
	CHECK(vg == NULL && lv == NULL);
	CHECK_EQ_INT(lvmthin_vid_split("a/b/c", &vg, &lv, &err), -EINVAL);
	CHECK_EQ_INT(lvmthin_vid_split("/lv", &vg, &lv, &err), -EINVAL);
	CHECK_EQ_INT(lvmthin_vid_split("vg/-x", &vg, &lv, &err), -EINVAL);
	CHECK(strstr(err.msg, "invalid volume id") != NULL);
}

TEST(parses_revision_names)
{
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private-1700000000-back", "vm-a-private"), 1700000000);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private-7-back", "vm-a-private"), 7);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private", "vm-a-private"), -1);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private-snap", "vm-a-private"), -1);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private--back", "vm-a-private"), -1);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private-12-back-x", "vm-a-private"), -1);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private-1x2-back", "vm-a-private"), -1);
	/* one base name is a prefix of another VM's names */
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private-root-5-back", "vm-a-private"), -1);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-privatex-5-back", "vm-a-private"), -1);
	CHECK_EQ_INT(lvmthin_rev_num("vm-a-private-1234567890123456789-back", "vm-a-private"), -1);
}

TEST(numbers_new_revisions_in_order)
{
	struct lvmthin_rev r[2] = { { 100, NULL }, { 105, NULL } };

	CHECK_EQ_INT(lvmthin_rev_next(NULL, 0, 99), 99);
	CHECK_EQ_INT(lvmthin_rev_next(r, 2, 200), 200);
	/* several commits within one second */
	CHECK_EQ_INT(lvmthin_rev_next(r, 2, 105), 106);
	CHECK_EQ_INT(lvmthin_rev_next(r, 2, 101), 106);
}

TEST(formats_revision_times)
{
	char t[32];

	lvmthin_iso_time(1700000000, t, sizeof(t));
	CHECK_EQ_STR(t, "2023-11-14T22:13:20");
}

TEST(computes_usage)
{
	CHECK_EQ_INT(lvmthin_bp_of(2147483648ULL, 1250), 268435456);
	CHECK_EQ_INT(lvmthin_bp_of(1000, LVMTHIN_BP_FULL), 1000);
	CHECK_EQ_INT(lvmthin_bp_of(1000, 20000), 1000);
	CHECK_EQ_INT(lvmthin_bp_of(0, 5000), 0);
	CHECK(lvmthin_bp_of(UINT64_MAX, LVMTHIN_BP_FULL) == UINT64_MAX);
}

TEST(parses_the_report)
{
	struct qp_err err = { 0 };
	struct lvmthin_report *r = NULL;
	const struct lvmthin_lv *l;

	CHECK_EQ_INT(lvmthin_report_parse("qvg", canned, &r, &err), 0);
	if (!r)
		return;
	CHECK_EQ_INT(r->n, 7);
	l = lvmthin_report_find(r, "qpool");
	CHECK(l && l->attr[0] == 't');
	CHECK(l && l->size == 2147483648ULL && l->data_bp == 1250);
	CHECK(l && l->meta_size == 4194304 && l->meta_bp == 703);
	l = lvmthin_report_find(r, "vm-a-root-snap");
	CHECK(l && !strcmp(l->origin, "vm-t-root") && !strcmp(l->pool_lv, "qpool"));
	CHECK(l && l->data_bp == 100 && l->attr[4] == 'a');
	l = lvmthin_report_find(r, "vm-t-root-1700000001-back");
	CHECK(l && l->data_bp == 50 && l->attr[4] == '-');
	l = lvmthin_report_find(r, "vm-t-private");
	CHECK(l && l->data_bp == 0 && !strcmp(l->origin, ""));
	CHECK(lvmthin_report_find(r, "vm-t") == NULL);
	lvmthin_report_free(r);

	CHECK_EQ_INT(lvmthin_report_parse("qvg", "", &r, &err), 0);
	CHECK(r && r->n == 0);
	lvmthin_report_free(r);
	lvmthin_report_free(NULL);
}

TEST(rejects_malformed_reports)
{
	static const char *const bad[] = {
		"  qpool|||twi-aotz--|2147483648|12.50|4194304\n",	  /* a field short */
		"  qpool|||twi-aotz--|2147483648|12.50|4194304|7.03|x\n", /* one too many */
		"  qpool|||twi-aotz--|2g|12.50|4194304|7.03\n",		  /* size with a unit */
		"  -x|||twi-aotz--|1|1|1|1\n",				  /* invalid name */
		"  qpool|||twi-aotz--|1|abc|1|1\n",			  /* percent */
		"  Volume group qvg not found\n",
	};
	struct qp_err err = { 0 };
	struct lvmthin_report *r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = NULL;
		CHECK_EQ_INT(lvmthin_report_parse("qvg", bad[i], &r, &err), -EIO);
		CHECK(r == NULL);
		CHECK(strstr(err.msg, "unexpected line in the LVM report of 'qvg'") != NULL);
	}
}

TEST(lists_revisions_oldest_first)
{
	struct qp_err err = { 0 };
	struct lvmthin_report *r = NULL;
	struct lvmthin_rev *rv = NULL;
	size_t n = 0;

	CHECK_EQ_INT(lvmthin_report_parse("qvg", canned, &r, &err), 0);
	CHECK_EQ_INT(lvmthin_revs(r, "vm-t-root", &rv, &n, &err), 0);
	CHECK_EQ_INT(n, 2);
	if (n == 2) {
		CHECK_EQ_INT(rv[0].num, 1700000001);
		CHECK_EQ_STR(rv[0].name, "vm-t-root-1700000001-back");
		CHECK_EQ_INT(rv[1].num, 1700000005);
	}
	lvmthin_revs_free(rv, n);
	CHECK_EQ_INT(lvmthin_revs(r, "vm-t-private", &rv, &n, &err), 0);
	CHECK_EQ_INT(n, 0);
	lvmthin_revs_free(rv, n);
	lvmthin_report_free(r);
}

/* A pool of the driver outside any state, with the canned report cached. */
static struct qp_pool *canned_pool(void)
{
	struct qp_kvlist cfg = { 0 };
	struct qp_err err = { 0 };
	struct qp_pool *p = NULL;

	qp_kv_set(&cfg, "volume_group", "qvg");
	qp_kv_set(&cfg, "thin_pool", "qpool");
	if (qp_pool_new(NULL, "lvm", "lvm_thin", &cfg, &p, &err) < 0)
		fprintf(stderr, "%s\n", err.msg);
	qp_kv_release(&cfg);
	if (p && lvmthin_report_parse("qvg", canned, &lvmthin_to_pool(p)->rep, &err) < 0) {
		qp_pool_free(p);
		return NULL;
	}
	return p;
}

TEST(keeps_the_cache_in_step)
{
	struct qp_pool *p = canned_pool();
	struct lvmthin_pool *lp = p ? lvmthin_to_pool(p) : NULL;
	const struct lvmthin_lv *l;

	CHECK(p != NULL);
	if (!p)
		return;
	/* a commit: base to a revision, the running copy to the base */
	lvmthin_note_rename(lp, "vm-t-root", "vm-t-root-1700000006-back");
	CHECK(lp->rep != NULL);
	l = lvmthin_report_find(lp->rep, "vm-a-root-snap");
	CHECK(l && !strcmp(l->origin, "vm-t-root-1700000006-back"));
	CHECK(lvmthin_report_find(lp->rep, "vm-t-root") == NULL);
	lvmthin_note_snapshot(lp, "vm-t-private", "vm-t-private-snap");
	l = lvmthin_report_find(lp->rep, "vm-t-private-snap");
	CHECK(l && !strcmp(l->origin, "vm-t-private") && l->size == 2147483648ULL);
	CHECK(l && l->attr[4] == 'a');
	/* pruning the origin of a running snapshot */
	lvmthin_note_remove(lp, "vm-t-root-1700000006-back");
	l = lvmthin_report_find(lp->rep, "vm-a-root-snap");
	CHECK(l && !strcmp(l->origin, ""));
	CHECK_EQ_INT(lp->rep ? lp->rep->n : 0, 7);
	/* removing what is not there changes nothing */
	lvmthin_note_remove(lp, "nothing");
	CHECK(lp->rep != NULL);
	/* a rename onto an existing name cannot be right: read again */
	lvmthin_note_rename(lp, "vm-t-private", "qpool");
	CHECK(lp->rep == NULL);
	CHECK_EQ_INT(lvmthin_report_parse("qvg", canned, &lp->rep, &(struct qp_err){ 0 }), 0);
	lvmthin_note_other(lp);
	CHECK(lp->rep == NULL);
	qp_pool_free(p);
}

TEST(checks_pool_options)
{
	static const char *const bad[][2] = {
		{ "volume_group", "-vg" },
		{ "thin_pool", "a/b" },
		{ "revisions_to_keep", "-2" },
		{ "ephemeral_volatile", "maybe" },
	};
	struct qp_err err = { 0 };
	struct qp_pool *p = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct qp_kvlist cfg = { 0 };

		qp_kv_set(&cfg, "volume_group", "qvg");
		qp_kv_set(&cfg, "thin_pool", "qpool");
		qp_kv_set(&cfg, bad[i][0], bad[i][1]);
		CHECK_EQ_INT(qp_pool_new(NULL, "lvm", "lvm_thin", &cfg, &p, &err), -EINVAL);
		CHECK(p == NULL);
		CHECK(strstr(err.msg, bad[i][0]) != NULL);
		qp_kv_release(&cfg);
	}
	p = canned_pool();
	CHECK(p && p->revisions_to_keep == 1 && !p->ephemeral_volatile);
	CHECK(p && !strcmp(p->drv->params[1], "volume_group"));
	if (p) {
		CHECK_EQ_INT(p->drv->pool_set(p, "revisions_to_keep", "3", &err), 0);
		CHECK_EQ_INT(p->revisions_to_keep, 3);
		CHECK_EQ_INT(p->drv->pool_set(p, "thin_pool", "other", &err), -EINVAL);
		CHECK(strstr(err.msg, "not supported") != NULL);
	}
	qp_pool_free(p);
}

TEST(gives_vids)
{
	struct qp_pool *p = canned_pool();
	struct qp_domain *d = qp_dom_new("work-1", QP_APPVM);
	struct qp_err err = { 0 };
	char *vid = NULL;

	CHECK(p && d);
	if (p && d) {
		CHECK_EQ_INT(p->drv->vol_vid(p, d, "private", &vid, &err), 0);
		CHECK_EQ_STR(vid, "qvg/vm-work-1-private");
	}
	free(vid);
	qp_dom_free(d);
	qp_pool_free(p);
}

/* The real lvm tool, when installed: a volume group that does not exist
 * makes the pool offline, and setup fails with LVM's own words. */
TEST(reports_a_missing_volume_group)
{
	char log[] = "/tmp/qp-lvmthin-log.XXXXXX";
	struct qp_kvlist cfg = { 0 };
	struct qp_err err = { 0 };
	enum qp_pool_state ps = QP_POOL_ONLINE;
	struct qp_pool *p = NULL;
	char line[512] = "";
	FILE *f;
	int fd;

	if (access("/usr/sbin/lvm", X_OK) && access("/sbin/lvm", X_OK))
		SKIP("lvm is not installed");
	fd = mkstemp(log);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	close(fd);
	setenv("QPOOL_RUN_LOG", log, 1);
	qp_kv_set(&cfg, "volume_group", "qp_no_such_vg");
	qp_kv_set(&cfg, "thin_pool", "pool");
	CHECK_EQ_INT(qp_pool_new(NULL, "lvm", "lvm_thin", &cfg, &p, &err), 0);
	if (p) {
		CHECK_EQ_INT(p->drv->pool_state(p, &ps, &err), 0);
		CHECK_EQ_INT(ps, QP_POOL_OFFLINE);
		CHECK(p->drv->pool_setup(p, &err) < 0);
		CHECK(strstr(err.msg, "cannot use pool 'lvm'") != NULL);
		CHECK(strstr(err.msg, "qp_no_such_vg") != NULL);
	}
	unsetenv("QPOOL_RUN_LOG");
	f = fopen(log, "r");
	CHECK(f && fgets(line, sizeof(line), f));
	CHECK(strncmp(line, "lvm lvs --config devices { hints = \"none\" } ", 44) == 0);
	CHECK(strstr(line, " --noheadings --separator | --units b --nosuffix -o ") != NULL);
	CHECK(strstr(line, " -- qp_no_such_vg\n") != NULL);
	if (f)
		fclose(f);
	unlink(log);
	qp_kv_release(&cfg);
	qp_pool_free(p);
}

int main(void)
{
	RUN(mangles_dm_names);
	RUN(validates_names);
	RUN(splits_vids);
	RUN(parses_revision_names);
	RUN(numbers_new_revisions_in_order);
	RUN(formats_revision_times);
	RUN(computes_usage);
	RUN(parses_the_report);
	RUN(rejects_malformed_reports);
	RUN(lists_revisions_oldest_first);
	RUN(keeps_the_cache_in_step);
	RUN(checks_pool_options);
	RUN(gives_vids);
	RUN(reports_a_missing_volume_group);
	return harness_done();
}
