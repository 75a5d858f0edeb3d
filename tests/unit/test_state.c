/* Unit tests for storage/state.c: qubes.xml parsing, formatting, the
 * default state, atomic saves, locking and recovery after a reboot. */
#include "qpool.h"
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

static char *data_path(const char *name)
{
	/* __FILE__ is tests/unit/test_state.c as make compiles it */
	const char *f = __FILE__, *slash = strrchr(f, '/');
	size_t dirlen = slash ? (size_t)(slash - f) : 0;

	return qp_strdupf("%.*s%s../data/%s", (int)dirlen, f, dirlen ? "/" : "", name);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
		buf[n] = '\0';
		if (len)
			*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static char *slurp_data(const char *name, size_t *len)
{
	char *p = data_path(name), *buf = slurp(p, len);

	if (!buf)
		fprintf(stderr, "cannot read '%s'\n", p);
	free(p);
	return buf;
}

static char *mktmp(void)
{
	char *d = strdup("/tmp/qpool-test-state-XXXXXX");

	if (!mkdtemp(d)) {
		free(d);
		return NULL;
	}
	return d;
}

static void rmrf(const char *path)
{
	char *argv[] = { "rm", "-rf", (char *)path, NULL };
	struct qp_err err = { 0 };

	qp_run(argv, NULL, &err);
}

static int parse_str(const char *xml, struct qp_state **st, struct qp_err *err)
{
	return qp_state_parse(xml, strlen(xml), st, err);
}

/* A document with one domain built from @dom_xml. */
static int parse_dom(const char *dom_xml, struct qp_err *err)
{
	char *doc = qp_strdupf("<qubes><labels><label id=\"label-1\" color=\"0xcc0000\">red</label>"
			       "</labels><pools/><properties/><domains>%s</domains></qubes>",
			       dom_xml);
	struct qp_state *st = NULL;
	int ret = parse_str(doc, &st, err);

	qp_state_free(st);
	free(doc);
	return ret;
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static int count_tmp_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "qubes.xml~", 10))
			n++;
	closedir(d);
	return n;
}

/* ---- tests -------------------------------------------------------------- */

TEST(default_root)
{
	unsetenv("QPOOL_ROOT");
	CHECK_EQ_STR(qp_default_root("/x"), "/x");
	CHECK_EQ_STR(qp_default_root(NULL), QP_DEFAULT_ROOT);
	setenv("QPOOL_ROOT", "", 1);
	CHECK_EQ_STR(qp_default_root(NULL), QP_DEFAULT_ROOT);
	setenv("QPOOL_ROOT", "/env/root", 1);
	CHECK_EQ_STR(qp_default_root(NULL), "/env/root");
	CHECK_EQ_STR(qp_default_root("/opt"), "/opt");
	unsetenv("QPOOL_ROOT");
}

TEST(e_example)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_domain *d0, *tpl, *work;
	struct qp_volume *root, *priv;
	size_t len;
	char *buf = slurp_data("qubes-e-example.xml", &len);

	CHECK(buf != NULL);
	if (!buf)
		return;
	CHECK_EQ_INT(qp_state_parse(buf, len, &st, &err), 0);
	if (!st) {
		fprintf(stderr, "%s\n", err.msg);
		free(buf);
		return;
	}
	CHECK_EQ_INT(st->n_labels, 2);
	CHECK_EQ_STR(qp_label_find(st, "black")->color, "0x000000");
	CHECK_EQ_INT(qp_label_find(st, "label-1")->id, 1);
	CHECK(qp_label_find(st, "green") == NULL);
	CHECK_EQ_INT(st->n_pools, 1);
	CHECK_EQ_STR(st->pools[0]->name, "vm-pool");
	CHECK_EQ_STR(qp_kv_get(&st->pools[0]->config, "volume_group"), "qubes_dom0");
	CHECK(qp_kv_get(&st->pools[0]->config, "driver") == NULL);
	CHECK(qp_kv_get(&st->pools[0]->config, "name") == NULL);
	CHECK_EQ_INT(st->pools[0]->revisions_to_keep, 1);
	CHECK(qp_default_pool(st) == st->pools[0]);
	CHECK_EQ_STR(qp_kv_get(&st->props, "default_template"), "debian-12");
	CHECK_EQ_INT(st->n_doms, 3);

	d0 = qp_dom_find(st, "dom0");
	tpl = qp_dom_find(st, "debian-12");
	work = qp_dom_find(st, "work");
	CHECK(d0 && tpl && work);
	if (!d0 || !tpl || !work)
		goto out;
	CHECK_EQ_INT(d0->cls, QP_ADMINVM);
	CHECK_EQ_INT(d0->qid, 0);
	CHECK_EQ_STR(qp_dom_prop(d0, "label"), "black");
	CHECK_EQ_STR(qp_kv_get(&d0->features, "backup-content"), "");
	CHECK_EQ_INT(d0->n_vols, 0);
	CHECK_EQ_INT(tpl->cls, QP_TEMPLATEVM);
	CHECK_EQ_INT(tpl->qid, 2);
	CHECK_EQ_STR(qp_dom_prop(tpl, "uuid"), "6a3f1c0e-2b7d-4c55-9a1e-0f3b5d7e9a12");
	CHECK(qp_dom_prop(tpl, "qid") == NULL);
	CHECK(qp_dom_template(tpl) == NULL);
	CHECK_EQ_INT(work->cls, QP_APPVM);
	CHECK_EQ_INT(work->qid, 1);
	CHECK_EQ_STR(qp_dom_prop(work, "label"), "red");
	CHECK_EQ_STR(qp_dom_prop(work, "name"), "work");
	CHECK(qp_dom_template(work) == tpl);
	CHECK_EQ_STR(qp_kv_get(&work->features, "backup-path"), "vm1/");
	CHECK(!qp_dom_started(work));

	CHECK_EQ_INT(work->n_vols, 2);
	root = qp_dom_volume(work, "root");
	priv = qp_dom_volume(work, "private");
	CHECK(root && priv);
	if (!root || !priv)
		goto out;
	CHECK_EQ_STR(root->pool_name, "vm-pool");
	CHECK(root->pool == st->pools[0]);
	CHECK_EQ_STR(root->vid, "qubes_dom0/vm-work-root");
	CHECK(root->snap_on_start && !root->save_on_stop && root->rw);
	CHECK(root->rtk_set);
	CHECK_EQ_INT(qp_vol_rtk(root), 0);
	CHECK_EQ_INT(root->size, 4194304);
	CHECK_EQ_STR(root->source, "qubes_dom0/vm-debian-12-root");
	CHECK(root->src == qp_dom_volume(tpl, "root"));
	CHECK(root->vm == work);
	CHECK_EQ_STR(qp_vol_kind(root), "snapshot");
	CHECK(!qp_vol_ephemeral(root));
	CHECK_EQ_STR(qp_vol_kind(priv), "origin");
	CHECK(priv->src == NULL);
	CHECK_EQ_INT(priv->ephemeral, -1);
	CHECK_EQ_INT(qp_vol_rtk(priv), 1);
	CHECK_EQ_INT(qp_dom_volume(tpl, "private")->size, 1048576);
	CHECK_EQ_INT(qp_state_next_qid(st), 3);
	/* a parsed state has no file to save to */
	CHECK_EQ_INT(qp_state_save(st, &err), -EBADF);
out:
	qp_state_free(st);
	free(buf);
}

TEST(legacy_file)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	struct qp_domain *d;
	struct qp_volume *v;
	char *buf = slurp_data("qubes-legacy.xml", NULL), *out = NULL;

	if (!buf) {
		CHECK(buf != NULL);
		return;
	}
	CHECK_EQ_INT(parse_str(buf, &st, &err), 0);
	if (!st) {
		fprintf(stderr, "%s\n", err.msg);
		free(buf);
		return;
	}
	/* pools of drivers qpool lacks are kept, with their driver name */
	CHECK_EQ_INT(st->n_pools, 2);
	CHECK(st->pools[0]->drv == NULL);
	CHECK_EQ_STR(qp_kv_get(&st->pools[0]->config, "dir_path"), "/var/lib/qubes");
	CHECK_EQ_STR(qp_default_pool(st)->name, "varlibqubes");
	CHECK_EQ_STR(qp_kv_get(&st->props, "default_netvm"), "");
	CHECK_EQ_STR(qp_dom_prop(qp_dom_find(st, "dom0"), "label"), "black");
	d = qp_dom_find(st, "legacy");
	CHECK(d != NULL);
	if (!d)
		goto out;
	CHECK_EQ_INT(d->cls, QP_STANDALONEVM);
	CHECK_EQ_STR(qp_dom_prop(d, "label"), "yellow");
	CHECK_EQ_STR(qp_dom_prop(d, "kernel"), "");
	CHECK_EQ_STR(qp_kv_get(&d->features, "gui"), "1");
	CHECK_EQ_STR(qp_kv_get(&d->features, "service.cups"), "");
	CHECK_EQ_INT(d->tags.n, 2);
	CHECK_EQ_STR(d->tags.v[1].key, "audio-vm");
	CHECK_EQ_INT(d->n_vols, 4);
	v = qp_dom_volume(d, "volatile");
	CHECK(v && v->ephemeral == 1 && qp_vol_ephemeral(v));
	CHECK_EQ_STR(qp_vol_kind(v), "volatile");
	v = qp_dom_volume(d, "kernel");
	CHECK(v && !v->rw && v->size == 0);
	/* the kernel pool is served by the linux-kernel driver */
	CHECK(v && v->pool && v->pool->drv && !strcmp(v->pool->drv->name, "linux-kernel"));
	CHECK(v && v->pool && v->pool->drv && v->pool->drv->read_only);
	/* an explicit empty kernel property wins over default_kernel */
	CHECK_EQ_STR(qp_dom_kernel(d), "");
	CHECK_EQ_INT(qp_vol_rtk(qp_dom_volume(d, "private")), 2);
	CHECK_EQ_INT(qp_dom_volume(d, "root")->size, 10737418240ULL);

	CHECK_EQ_INT(qp_state_format(st, &out, NULL, &err), 0);
	CHECK(out && strstr(out, "driver=\"file\""));
	CHECK(out && strstr(out, "<property name=\"label\">yellow</property>"));
	CHECK(out && !strstr(out, "devices"));
	CHECK(out && !strstr(out, "something-new"));
out:
	free(out);
	qp_state_free(st);
	free(buf);
}

/* format -> parse -> format gives the same bytes */
static void check_round_trip(const char *name)
{
	struct qp_err err = { 0 };
	struct qp_state *a = NULL, *b = NULL;
	char *buf = slurp_data(name, NULL), *x = NULL, *y = NULL;
	size_t xl = 0, yl = 0;

	CHECK(buf != NULL);
	if (!buf)
		return;
	CHECK_EQ_INT(parse_str(buf, &a, &err), 0);
	if (a)
		CHECK_EQ_INT(qp_state_format(a, &x, &xl, &err), 0);
	if (x)
		CHECK_EQ_INT(qp_state_parse(x, xl, &b, &err), 0);
	if (b)
		CHECK_EQ_INT(qp_state_format(b, &y, &yl, &err), 0);
	CHECK(x && y);
	if (x && y) {
		CHECK_EQ_INT(xl, yl);
		CHECK_EQ_INT(strlen(x), xl);
		CHECK_EQ_STR(x, y);
	}
	if (err.code)
		fprintf(stderr, "%s: %s\n", name, err.msg);
	free(x);
	free(y);
	qp_state_free(a);
	qp_state_free(b);
	free(buf);
}

TEST(round_trip)
{
	check_round_trip("qubes-e-example.xml");
	check_round_trip("qubes-legacy.xml");
}

TEST(format_layout)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	char *buf = slurp_data("qubes-e-example.xml", NULL), *x = NULL;
	struct qp_domain *work;
	struct qp_volume *v;
	const char *l, *p, *pr, *d;

	if (!buf || parse_str(buf, &st, &err) < 0) {
		CHECK(!"example parses");
		goto out;
	}
	work = qp_dom_find(st, "work");
	v = qp_dom_volume(work, "private");
	v->ephemeral = 0;
	v->size = 0;
	v = qp_dom_volume(work, "root");
	v->rtk_set = false;
	work->started = strdup("boot-1");
	qp_kv_set(&work->tags, "t1", "");
	qp_kv_set(&work->features, "odd", "a<b&\"c\"\n");
	CHECK_EQ_INT(qp_state_format(st, &x, NULL, &err), 0);
	if (!x)
		goto out;
	l = strstr(x, "<labels>");
	p = strstr(x, "<pools>");
	pr = strstr(x, "<properties>");
	d = strstr(x, "<domains>");
	CHECK(l && p && pr && d && l < p && p < pr && pr < d);
	CHECK(strstr(x, "<pool name=\"vm-pool\" driver=\"lvm_thin\" volume_group=\"qubes_dom0\" "
			"thin_pool=\"vm-pool\" revisions_to_keep=\"1\" "
			"ephemeral_volatile=\"False\"/>"));
	CHECK(strstr(x, "<domain id=\"domain-1\" class=\"AppVM\">"));
	/* properties sorted by name, name and qid among them */
	CHECK(strstr(x, "<property name=\"label\">red</property>\n"
			"        <property name=\"name\">work</property>\n"
			"        <property name=\"qid\">1</property>\n"
			"        <property name=\"template\">debian-12</property>"));
	CHECK(strstr(x, "<volume name=\"root\" pool=\"vm-pool\" vid=\"qubes_dom0/vm-work-root\" "
			"rw=\"True\" save_on_stop=\"False\" snap_on_start=\"True\" size=\"4194304\" "
			"source=\"qubes_dom0/vm-debian-12-root\"/>"));
	CHECK(strstr(x, "<volume name=\"private\" pool=\"vm-pool\" vid=\"qubes_dom0/vm-work-private\" "
			"revisions_to_keep=\"1\" rw=\"True\" save_on_stop=\"True\" "
			"snap_on_start=\"False\" ephemeral=\"False\"/>"));
	CHECK(strstr(x, "<tag name=\"t1\"/>"));
	CHECK(strstr(x, "<qpool-runtime started=\"boot-1\"/>\n    </domain>"));
	/* dom0 has no volume-config */
	CHECK(strstr(x, "class=\"AdminVM\"") && strstr(x, "class=\"AdminVM\"") < strstr(x, "<volume-config"));
	qp_state_free(st);
	st = NULL;
	/* what was written reads back the same */
	CHECK_EQ_INT(parse_str(x, &st, &err), 0);
	if (!st)
		goto out;
	work = qp_dom_find(st, "work");
	CHECK_EQ_STR(work->started, "boot-1");
	CHECK_EQ_STR(qp_kv_get(&work->features, "odd"), "a<b&\"c\"\n");
	CHECK(!qp_dom_volume(work, "root")->rtk_set);
	CHECK_EQ_INT(qp_dom_volume(work, "private")->ephemeral, 0);
	CHECK_EQ_INT(qp_dom_volume(work, "private")->size, 0);
	/* strings XML cannot hold are refused, not written */
	qp_kv_set(&work->features, "bad", "a\001b");
	free(x);
	x = NULL;
	CHECK_EQ_INT(qp_state_format(st, &x, NULL, &err), -EINVAL);
	CHECK(x == NULL);
out:
	free(x);
	qp_state_free(st);
	free(buf);
}

static const char *VOL_OK = "<volume-config><volume name=\"root\" pool=\"p\" vid=\"v\" rw=\"True\" "
			    "save_on_stop=\"True\" snap_on_start=\"False\"/></volume-config>";

static void check_bad_dom(const char *fmt, const char *arg, const char *want_in_msg)
{
	struct qp_err err = { 0 };
	char *dom = qp_strdupf(fmt, arg);
	int ret = parse_dom(dom, &err);

	CHECK_EQ_INT(ret, -EINVAL);
	if (want_in_msg && !strstr(err.msg, want_in_msg)) {
		fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, want_in_msg);
		CHECK(!"message names the subject");
	}
	free(dom);
}

#define APPVM(props, rest)                                                                     \
	"<domain id=\"domain-5\" class=\"AppVM\"><properties>" props "</properties>" rest     \
	"</domain>"

TEST(hostile_documents)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;

	/* the good one parses, so the bad ones fail for their own reason */
	{
		char *dom = qp_strdupf(APPVM("<property name=\"name\">ok</property>"
					     "<property name=\"qid\">5</property>", "%s"), VOL_OK);

		CHECK_EQ_INT(parse_dom(dom, &err), 0);
		free(dom);
	}
	check_bad_dom(APPVM("<property name=\"qid\">5</property>", "%s"), "", "domain-5");
	check_bad_dom("<domain id=\"domain-5\"><properties><property name=\"name\">x</property>"
		      "</properties></domain>%s", "", "class");
	check_bad_dom(APPVM("<property name=\"name\">work</property><property name=\"qid\">%s"
			    "</property>", ""), "abc", "work");
	check_bad_dom(APPVM("<property name=\"name\">work</property><property name=\"qid\">%s"
			    "</property>", ""), "-3", "work");
	check_bad_dom(APPVM("<property name=\"name\">work</property><property name=\"qid\">%s"
			    "</property>", ""), "0", "work");
	check_bad_dom(APPVM("<property name=\"name\">%s</property>", ""), "a/b", "a/b");
	check_bad_dom(APPVM("<property name=\"name\">%s</property>", ""), "..", "..");
	check_bad_dom(APPVM("<property name=\"name\">%s</property>", ""), "../etc", NULL);
	check_bad_dom(APPVM("<property name=\"name\">%s</property>", ""), "", NULL);
	check_bad_dom(APPVM("<property name=\"name\">work</property>",
			    "<volume-config><volume name=\"root\" pool=\"p\" vid=\"v\" "
			    "rw=\"%s\"/></volume-config>"),
		      "maybe", "work");
	check_bad_dom(APPVM("<property name=\"name\">work</property>",
			    "<volume-config><volume pool=\"p\" vid=\"v\" rw=\"%s\"/></volume-config>"),
		      "True", "work");
	check_bad_dom(APPVM("<property name=\"name\">work</property>",
			    "<volume-config><volume name=\"root\" pool=\"p\" vid=\"v\" "
			    "size=\"%s\"/></volume-config>"),
		      "12x", "work");
	check_bad_dom(APPVM("<property name=\"name\">work</property>",
			    "<volume-config><volume name=\"root\" pool=\"p\" vid=\"v\" "
			    "revisions_to_keep=\"%s\"/></volume-config>"),
		      "-2", "work");
	check_bad_dom(APPVM("<property name=\"name\">work</property>",
			    "<volume-config><volume name=\"root\" vid=\"%s\"/></volume-config>"), "v",
		      "work");
	/* duplicates: same name, same qid, same volume */
	check_bad_dom(APPVM("<property name=\"name\">%s</property>", "")
		      APPVM("<property name=\"name\">work</property><property name=\"qid\">6"
			    "</property>", ""), "work", "work");
	check_bad_dom(APPVM("<property name=\"name\">%s</property>", "")
		      APPVM("<property name=\"name\">other</property>", ""), "work", "other");
	check_bad_dom(APPVM("<property name=\"name\">work</property>",
			    "<volume-config><volume name=\"%s\" pool=\"p\" vid=\"v\"/>"
			    "<volume name=\"root\" pool=\"p\" vid=\"w\"/></volume-config>"),
		      "root", "work");

	/* whole-document failures */
	CHECK_EQ_INT(parse_str("<qubes><domains>", &st, &err), -EINVAL);
	CHECK(strstr(err.msg, "line") != NULL);
	CHECK_EQ_INT(parse_str("<notqubes/>", &st, &err), -EINVAL);
	CHECK_EQ_INT(parse_str("", &st, &err), -EINVAL);
	CHECK_EQ_INT(parse_str("<qubes><pools><pool driver=\"file-reflink\"/></pools></qubes>", &st,
			       &err), -EINVAL);
	CHECK_EQ_INT(parse_str("<qubes><pools><pool name=\"a\" driver=\"x\"/><pool name=\"a\" "
			       "driver=\"x\"/></pools></qubes>", &st, &err), -EINVAL);
	CHECK_EQ_INT(parse_str("<qubes><pools><pool name=\"a\" driver=\"x\" "
			       "revisions_to_keep=\"many\"/></pools></qubes>", &st, &err), -EINVAL);
	/* no DTD, so no entities to fetch or expand */
	CHECK_EQ_INT(parse_str("<!DOCTYPE q [<!ENTITY e SYSTEM \"/etc/passwd\">]><qubes><properties>"
			       "<property name=\"x\">&e;</property></properties></qubes>", &st, &err),
		     -EINVAL);
	CHECK_EQ_INT(parse_str("<!DOCTYPE qubes><qubes/>", &st, &err), -EINVAL);
	CHECK(st == NULL);
	/* the smallest document is an empty state */
	CHECK_EQ_INT(parse_str("<qubes/>", &st, &err), 0);
	if (st)
		CHECK(st->n_doms == 0 && st->n_pools == 0 && st->root == NULL && !st->writable);
	qp_state_free(st);
}

TEST(source_chain)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	const char *doc =
		"<qubes><pools><pool name=\"p\" driver=\"x\"/><pool name=\"q\" driver=\"x\"/></pools>"
		"<domains>"
		"<domain class=\"TemplateVM\"><properties><property name=\"name\">t</property>"
		"<property name=\"qid\">1</property></properties><volume-config>"
		"<volume name=\"root\" pool=\"p\" vid=\"t-root\" rw=\"True\" save_on_stop=\"True\"/>"
		"</volume-config></domain>"
		"<domain class=\"AppVM\"><properties><property name=\"name\">a</property>"
		"<property name=\"qid\">2</property><property name=\"template\">t</property>"
		"</properties><volume-config>"
		"<volume name=\"root\" pool=\"p\" vid=\"a-root\" snap_on_start=\"True\" source=\"t-root\"/>"
		"<volume name=\"private\" pool=\"q\" vid=\"x\" snap_on_start=\"True\" source=\"t-root\"/>"
		"<volume name=\"volatile\" pool=\"p\" vid=\"c1\" source=\"c2\"/>"
		"<volume name=\"kernel\" pool=\"p\" vid=\"c2\" source=\"c1\"/>"
		"</volume-config></domain>"
		"<domain class=\"DispVM\"><properties><property name=\"name\">d</property>"
		"<property name=\"qid\">3</property><property name=\"template\">a</property>"
		"</properties><volume-config>"
		"<volume name=\"root\" pool=\"p\" vid=\"d-root\" snap_on_start=\"True\" source=\"a-root\"/>"
		"<volume name=\"private\" pool=\"nope\" vid=\"d-priv\"/>"
		"</volume-config></domain>"
		"</domains></qubes>";
	struct qp_volume *troot, *v;

	CHECK_EQ_INT(parse_str(doc, &st, &err), 0);
	if (!st) {
		fprintf(stderr, "%s\n", err.msg);
		return;
	}
	troot = qp_dom_volume(qp_dom_find(st, "t"), "root");
	CHECK(qp_dom_volume(qp_dom_find(st, "a"), "root")->src == troot);
	CHECK(qp_dom_volume(qp_dom_find(st, "d"), "root")->src == troot);
	/* a source in another pool is not this volume's source */
	CHECK(qp_dom_volume(qp_dom_find(st, "a"), "private")->src == NULL);
	/* a loop resolves to nothing */
	CHECK(qp_dom_volume(qp_dom_find(st, "a"), "volatile")->src == NULL);
	v = qp_dom_volume(qp_dom_find(st, "d"), "private");
	CHECK(v->pool == NULL);
	CHECK_EQ_INT(qp_vol_rtk(v), 1);
	CHECK(qp_dom_template(qp_dom_find(st, "d")) == qp_dom_find(st, "a"));
	CHECK(qp_default_pool(st) == NULL);
	CHECK_EQ_INT(qp_state_next_qid(st), 0);
	/* removing a pool leaves no dangling pointers */
	qp_state_del_pool(st, qp_pool_find(st, "p"));
	CHECK(troot->pool == NULL);
	CHECK(qp_pool_find(st, "p") == NULL);
	qp_state_del_dom(st, qp_dom_find(st, "t"));
	CHECK(qp_dom_volume(qp_dom_find(st, "a"), "root")->src == NULL);
	CHECK_EQ_INT(st->n_doms, 2);
	qp_state_free(st);
}

TEST(volume_semantics)
{
	struct qp_volume *v = qp_vol_new("volatile");
	struct qp_pool pool = { .revisions_to_keep = 3, .ephemeral_volatile = true };

	CHECK(v != NULL);
	if (!v)
		return;
	CHECK_EQ_INT(v->ephemeral, -1);
	CHECK(!v->rtk_set);
	CHECK(v->pool_name == NULL && v->vid == NULL && v->source == NULL);
	CHECK_EQ_INT(qp_vol_rtk(v), 1);
	v->pool = &pool;
	CHECK_EQ_INT(qp_vol_rtk(v), 3);
	v->rtk_set = true;
	v->rtk = -1;
	CHECK_EQ_INT(qp_vol_rtk(v), -1);
	/* ephemeral default: only writable, not saved, not snapshotted volumes follow the pool */
	CHECK(!qp_vol_ephemeral(v));	/* read-only */
	v->rw = true;
	CHECK(qp_vol_ephemeral(v));
	pool.ephemeral_volatile = false;
	CHECK(!qp_vol_ephemeral(v));
	pool.ephemeral_volatile = true;
	v->save_on_stop = true;
	CHECK(!qp_vol_ephemeral(v));
	CHECK_EQ_STR(qp_vol_kind(v), "origin");
	v->snap_on_start = true;
	CHECK(!qp_vol_ephemeral(v));
	CHECK_EQ_STR(qp_vol_kind(v), "origin_snapshot");
	v->save_on_stop = false;
	CHECK_EQ_STR(qp_vol_kind(v), "snapshot");
	v->ephemeral = 1;
	CHECK(qp_vol_ephemeral(v));
	v->snap_on_start = false;
	v->ephemeral = 0;
	CHECK(!qp_vol_ephemeral(v));
	CHECK_EQ_STR(qp_vol_kind(v), "volatile");
	qp_vol_free(v);
	qp_vol_free(NULL);
	qp_dom_free(NULL);
	qp_pool_free(NULL);
	qp_state_free(NULL);
}

TEST(open_creates_default)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL, *st2 = NULL;
	char *dir = mktmp(), *root = NULL, *path = NULL, *pdir = NULL, *before = NULL, *after = NULL;
	struct qp_pool *p;
	struct qp_domain *d0;

	if (!dir) {
		CHECK(!"mkdtemp");
		return;
	}
	root = qp_strdupf("%s/a/b", dir);	/* missing parents are made too */
	path = qp_strdupf("%s/qubes.xml", root);
	pdir = qp_strdupf("%s/pool-default", root);
	CHECK_EQ_INT(qp_state_open(root, 0, &st, &err), 0);
	if (!st) {
		fprintf(stderr, "%s\n", err.msg);
		goto out;
	}
	CHECK(file_exists(path));
	CHECK(file_exists(pdir));
	CHECK(!st->writable);
	CHECK_EQ_INT(st->lock_fd, -1);
	CHECK_EQ_INT(st->n_labels, 8);
	CHECK_EQ_STR(qp_label_find(st, "label-4")->name, "green");
	CHECK_EQ_STR(qp_label_find(st, "purple")->color, "0x75507b");
	CHECK_EQ_STR(qp_label_find(st, "black")->color, "0x000000");
	CHECK_EQ_INT(qp_label_find(st, "black")->id, 8);
	CHECK_EQ_INT(st->n_pools, 1);
	p = qp_default_pool(st);
	CHECK(p && p->drv && !strcmp(p->drv->name, "file-reflink"));
	if (p) {
		CHECK_EQ_STR(p->name, "default");
		CHECK_EQ_STR(qp_kv_get(&p->config, "dir_path"), pdir);
		CHECK_EQ_STR(qp_kv_get(&p->config, "revisions_to_keep"), "1");
		CHECK_EQ_STR(qp_kv_get(&p->config, "ephemeral_volatile"), "False");
		CHECK(qp_kv_get(&p->config, "setup_check") == NULL);
		CHECK_EQ_INT(p->revisions_to_keep, 1);
		CHECK(!p->ephemeral_volatile);
		CHECK(p->st == st);
	}
	CHECK_EQ_STR(qp_kv_get(&st->props, "default_pool"), "default");
	CHECK_EQ_INT(st->n_doms, 1);
	d0 = qp_dom_find(st, "dom0");
	CHECK(d0 && d0->cls == QP_ADMINVM && d0->qid == 0 && d0->n_vols == 0);
	CHECK(d0 && !strcmp(qp_dom_prop(d0, "label"), "black"));
	/* a reader cannot save */
	CHECK_EQ_INT(qp_state_save(st, &err), -EBADF);
	qp_state_free(st);
	st = NULL;

	/* a second open reads the same file without changing it */
	before = slurp(path, NULL);
	CHECK_EQ_INT(qp_state_open(root, QP_STATE_WRITE, &st, &err), 0);
	after = slurp(path, NULL);
	CHECK(before && after && !strcmp(before, after));
	if (st) {
		CHECK(st->writable);
		CHECK(st->lock_fd >= 0);
		CHECK_EQ_INT(st->n_doms, 1);
		CHECK_EQ_INT(qp_state_save(st, &err), 0);
		free(after);
		after = slurp(path, NULL);
		CHECK(before && after && !strcmp(before, after));
		CHECK_EQ_INT(count_tmp_files(root), 0);
	}
	CHECK_EQ_INT(qp_state_open(root, 2, &st2, &err), -EINVAL);
	CHECK(st2 == NULL);
out:
	qp_state_free(st);
	rmrf(dir);
	free(before);
	free(after);
	free(root);
	free(path);
	free(pdir);
	free(dir);
}

TEST(lock_and_unknown_driver)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL, *rd = NULL;
	char *dir = mktmp(), *lock = NULL, *path = NULL;
	int fd;
	FILE *f;

	if (!dir) {
		CHECK(!"mkdtemp");
		return;
	}
	lock = qp_strdupf("%s/qubes.xml.lock", dir);
	path = qp_strdupf("%s/qubes.xml", dir);
	CHECK_EQ_INT(qp_state_open(dir, QP_STATE_WRITE, &st, &err), 0);
	fd = open(lock, O_RDWR);
	CHECK(fd >= 0);
	/* the writer holds the lock; readers still open */
	CHECK(flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK);
	CHECK_EQ_INT(qp_state_open(dir, 0, &rd, &err), 0);
	qp_state_free(rd);
	qp_state_free(st);
	CHECK_EQ_INT(flock(fd, LOCK_EX | LOCK_NB), 0);
	close(fd);

	f = fopen(path, "w");
	if (f) {
		fputs("<qubes><pools><pool name=\"vm-pool\" driver=\"zfs_zvol\" x=\"1\"/></pools>"
		      "</qubes>", f);
		fclose(f);
	}
	st = NULL;
	CHECK_EQ_INT(qp_state_open(dir, 0, &st, &err), -EINVAL);
	CHECK_EQ_STR(err.msg, "pool 'vm-pool' has unknown driver 'zfs_zvol'");
	CHECK(st == NULL);
	f = fopen(path, "w");
	if (f) {
		fputs("<qubes><domains><domain class=\"AppVM\"/></domains></qubes>", f);
		fclose(f);
	}
	CHECK_EQ_INT(qp_state_open(dir, 0, &st, &err), -EINVAL);
	CHECK(strstr(err.msg, path) != NULL);
	rmrf(dir);
	free(lock);
	free(path);
	free(dir);
}

/* Fills a small tmpfs, then saves a larger state: the save fails with ENOSPC
 * and leaves the old file byte for byte, with no temporary file behind. */
TEST(save_is_atomic)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	char *dir = mktmp(), *path = NULL, *fill = NULL, *before = NULL, *after = NULL;
	bool mounted = false;
	int fd;

	if (!dir) {
		CHECK(!"mkdtemp");
		return;
	}
	if (mount("qpool-test", dir, "tmpfs", 0, "size=256k") < 0) {
		rmrf(dir);
		free(dir);
		SKIP("cannot mount a tmpfs (not root?)");
	}
	mounted = true;
	path = qp_strdupf("%s/qubes.xml", dir);
	fill = qp_strdupf("%s/filler", dir);
	CHECK_EQ_INT(qp_state_open(dir, QP_STATE_WRITE, &st, &err), 0);
	if (!st) {
		fprintf(stderr, "%s\n", err.msg);
		goto out;
	}
	before = slurp(path, NULL);
	/* fill the file system to the last block */
	fd = open(fill, O_WRONLY | O_CREAT, 0644);
	if (fd >= 0) {
		static char block[4096];

		while (write(fd, block, sizeof(block)) > 0)
			;
		close(fd);
	}
	for (int i = 1; i < 40; i++) {
		char name[32];
		struct qp_domain *d;

		snprintf(name, sizeof(name), "vm%d", i);
		d = qp_dom_new(name, QP_APPVM);
		d->qid = qp_state_next_qid(st);
		qp_kv_set(&d->props, "label", "red");
		CHECK_EQ_INT(qp_state_add_dom(st, d), 0);
	}
	CHECK_EQ_INT(qp_state_add_dom(st, qp_dom_find(st, "vm1")), -EEXIST);
	CHECK_EQ_INT(qp_state_save(st, &err), -ENOSPC);
	after = slurp(path, NULL);
	CHECK(before && after && !strcmp(before, after));
	CHECK_EQ_INT(count_tmp_files(dir), 0);
	/* with room again, the same save works */
	unlink(fill);
	CHECK_EQ_INT(qp_state_save(st, &err), 0);
	free(after);
	after = slurp(path, NULL);
	CHECK(after && strstr(after, "<property name=\"name\">vm39</property>"));
	CHECK_EQ_INT(count_tmp_files(dir), 0);
out:
	qp_state_free(st);
	if (mounted)
		umount2(dir, MNT_DETACH);
	rmrf(dir);
	free(before);
	free(after);
	free(path);
	free(fill);
	free(dir);
}

/* A VM left started by an earlier boot (main sets QPOOL_BOOT_ID=boot-new, and
 * qp_boot_id reads it once): opening for writing runs the
 * driver's recovery (the running copy of a volatile volume goes away) and
 * clears the mark; a mark of this boot stays. */
TEST(recover_after_reboot)
{
	struct qp_err err = { 0 };
	struct qp_state *st = NULL;
	char *dir = mktmp(), *dev = NULL;
	struct qp_domain *d, *d2;
	struct qp_volume *v;
	struct qp_pool *p;
	int ret;

	if (!dir) {
		CHECK(!"mkdtemp");
		return;
	}
	CHECK_EQ_STR(qp_boot_id(), "boot-new");
	CHECK_EQ_INT(qp_state_open(dir, QP_STATE_WRITE, &st, &err), 0);
	if (!st)
		goto out;
	p = qp_default_pool(st);
	d = qp_dom_new("crashed", QP_STANDALONEVM);
	d->qid = qp_state_next_qid(st);
	v = qp_vol_new("volatile");
	v->rw = true;
	v->size = 1 << 20;
	v->pool_name = strdup("default");
	CHECK_EQ_INT(qp_dom_add_volume(d, v), 0);
	{
		struct qp_volume *dup = qp_vol_new("volatile");

		CHECK_EQ_INT(qp_dom_add_volume(d, dup), -EEXIST);
		qp_vol_free(dup);
	}
	CHECK_EQ_INT(qp_state_add_dom(st, d), 0);
	qp_state_link(st);
	CHECK(v->pool == p && v->vm == d);
	ret = p->drv->vol_vid(p, d, "volatile", &v->vid, &err);
	if (ret == 0)
		ret = p->drv->vol_create(v, &err);
	if (ret == 0)
		ret = p->drv->vol_start(v, &err);
	if (ret == 0)
		ret = p->drv->vol_block_device(v, &dev, &err);
	CHECK_EQ_INT(ret, 0);
	if (ret < 0) {
		fprintf(stderr, "%s\n", err.msg);
		goto out;
	}
	CHECK(file_exists(dev));
	d->started = strdup("boot-old");	/* as if started before a reboot */
	CHECK(!qp_dom_started(d));
	d2 = qp_dom_new("running", QP_STANDALONEVM);
	d2->qid = qp_state_next_qid(st);
	d2->started = strdup("boot-new");
	CHECK_EQ_INT(qp_state_add_dom(st, d2), 0);
	CHECK_EQ_INT(qp_state_save(st, &err), 0);
	qp_state_free(st);
	st = NULL;

	/* readers see the stale mark but do not count the VM as started */
	CHECK_EQ_INT(qp_state_open(dir, 0, &st, &err), 0);
	if (st) {
		d = qp_dom_find(st, "crashed");
		CHECK(d && d->started && !qp_dom_started(d));
		CHECK(qp_dom_started(qp_dom_find(st, "running")));
	}
	qp_state_free(st);
	CHECK(file_exists(dev));
	st = NULL;
	CHECK_EQ_INT(qp_state_open(dir, QP_STATE_WRITE, &st, &err), 0);
	if (!st) {
		fprintf(stderr, "%s\n", err.msg);
		goto out;
	}
	CHECK(qp_dom_find(st, "crashed")->started == NULL);
	CHECK_EQ_STR(qp_dom_find(st, "running")->started, "boot-new");
	CHECK(!file_exists(dev));
	qp_state_free(st);
	st = NULL;
	/* and the cleared mark was saved */
	CHECK_EQ_INT(qp_state_open(dir, 0, &st, &err), 0);
	if (st)
		CHECK(qp_dom_find(st, "crashed")->started == NULL);
out:
	qp_state_free(st);
	rmrf(dir);
	free(dev);
	free(dir);
}

int main(void)
{
	setenv("QPOOL_BOOT_ID", "boot-new", 1);
	RUN(default_root);
	RUN(e_example);
	RUN(legacy_file);
	RUN(round_trip);
	RUN(format_layout);
	RUN(hostile_documents);
	RUN(source_chain);
	RUN(volume_semantics);
	RUN(open_creates_default);
	RUN(lock_and_unknown_driver);
	RUN(save_is_atomic);
	RUN(recover_after_reboot);
	return harness_done();
}
