#!/bin/sh
# qpool driver-conformance suite.
#
# Runs the same storage contract against one pool of any driver: template
# updates, disposable resets, origin commits, revisions, resize, import,
# export, clone, clear, volatile volumes and crash consistency of stop,
# start and import (through the QPOOL_CRASH_AFTER test hook).
#
# POSIX sh only, and only tools a small busybox has (dd, cmp, sha256sum or
# md5sum, grep, sed, awk, head, wc, cat, mkdir, mv, rm; find for the built-in
# file-reflink stray check), so that it also runs inside the device-mapper
# test VM.  It may be executed or sourced.  Volume paths may be files or
# block devices; data goes through dd only.  Imported sizes are multiples of
# 4 MiB, which LVM extents represent exactly.
#
# Environment:
#   QPOOL           absolute path of the qpool binary
#   QPOOL_ROOT      a fresh state folder
#   CONF_POOL       name of the pool to create
#   CONF_DRIVER     its driver (file-reflink, lvm_thin...)
#   CONF_POOL_OPTS  the -o string for `pool add`
#   CONF_LABEL      optional: names the run in result lines (default CONF_DRIVER)
#   CONF_TMP        optional: scratch folder (default QPOOL_ROOT/conf-tmp)
#   CONF_ONLY       optional: space-separated test names to run (default all)
#   CONF_VERBOSE    optional: when non-empty, show the log of passed tests too
#   CONF_CHECK_STRAY
#                   optional: a shell function of that name (or a command in
#                   the variable) that fails when the pool holds files or
#                   devices left by an interrupted operation.  file-reflink
#                   has a built-in check.
#
# Prints `PASS: conformance/LABEL/TEST` or `FAIL: ...` (followed by the end of
# the test's log, indented with `  # `) for each test.  Returns 0 when every
# test passed.

CONF_MiB=1048576

# ---- running qpool ---------------------------------------------------------

# Every call uses the suite's boot id, so a test can simulate a reboot by
# changing conf_boot (inside its own subshell).
conf_q() {
	QPOOL_BOOT_ID=$conf_boot "$QPOOL" --root "$QPOOL_ROOT" "$@"
}

# conf_qc K ARGS...: the same with the crash hook armed at step K.
conf_qc() {
	conf_k=$1
	shift
	QPOOL_CRASH_AFTER=$conf_k QPOOL_BOOT_ID=$conf_boot "$QPOOL" --root "$QPOOL_ROOT" "$@"
}

# ---- helpers used inside a test (each test runs in a subshell) -------------

conf_die() {
	echo "error: $*" >&2
	exit 1
}

# conf_ok ARGS...: runs qpool, stdout into $conf_t/out; fails the test on error.
conf_ok() {
	conf_q "$@" >"$conf_t/out" 2>"$conf_t/err" ||
		conf_die "'qpool $*' failed with $?: $(cat "$conf_t/err")"
}

# conf_fails ARGS...: qpool must exit 1 with a `qpool:` message.
conf_fails() {
	conf_q "$@" >"$conf_t/out" 2>"$conf_t/err"
	conf_rc=$?
	[ "$conf_rc" -eq 1 ] || conf_die "'qpool $*' exited $conf_rc, expected 1"
	grep -q '^qpool: ' "$conf_t/err" || conf_die "'qpool $*' printed no 'qpool:' message"
}

conf_expect() {
	[ "$2" = "$3" ] || conf_die "$1: expected '$2', got '$3'"
}

# conf_info VM:VOL PROP: prints the property (fails the test on error).
conf_info() {
	conf_q volume info "$1" "$2" 2>"$conf_t/err.info" ||
		{ echo "error: 'volume info $1 $2' failed: $(cat "$conf_t/err.info")" >&2; return 1; }
}

# conf_expect_info VM:VOL PROP VALUE
conf_expect_info() {
	conf_v=$(conf_info "$1" "$2") || exit 1
	conf_expect "$1 $2" "$3" "$conf_v"
}

# conf_vm NAME CLASS [TEMPLATE]: creates a VM in the pool under test.
conf_vm() {
	if [ -n "$3" ]; then
		conf_ok vm create --class "$2" --template "$3" -P "$CONF_POOL" "$1"
	else
		conf_ok vm create --class "$2" -P "$CONF_POOL" "$1"
	fi
	echo "$1" >>"$conf_t/vms"
}

# conf_start VM: starts it and keeps its `VOLUME PATH rw|ro` lines.
conf_start() {
	conf_ok vm start "$1"
	cat "$conf_t/out" >"$conf_t/att.$1"
}

conf_stop() {
	conf_ok vm stop "$1"
}

# conf_dev VM VOL: the path VOL of VM was attached at by its last conf_start.
conf_dev() {
	conf_p=$(awk -v v="$2" '$1 == v { print $2 }' "$conf_t/att.$1" 2>/dev/null)
	if [ -z "$conf_p" ]; then
		echo "error: 'vm start $1' printed no path for volume '$2'" >&2
		return 1
	fi
	echo "$conf_p"
}

# conf_running VM: true when `vm list` shows VM started.
conf_running() {
	conf_q vm list 2>/dev/null | awk -v n="$1" '
		$1 == n { s = tolower($NF); if (s ~ /^(running|started|run|start|up|yes)$/) r = 1 }
		END { exit !r }'
}

conf_sum() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum
	else
		md5sum
	fi | awk '{ print $1 }'
}

# conf_rand NAME MIB: $conf_t/NAME gets MIB MiB of random bytes.
conf_rand() {
	dd if=/dev/urandom of="$conf_t/$1" bs=$CONF_MiB count="$2" 2>/dev/null ||
		conf_die "cannot make random data"
}

# conf_zero NAME MIB
conf_zero() {
	dd if=/dev/zero of="$conf_t/$1" bs=$CONF_MiB count="$2" 2>/dev/null ||
		conf_die "cannot make zero data"
}

# conf_write PATH OFF_MIB NAME: writes $conf_t/NAME at OFF_MIB MiB of PATH
# (a file or a block device) and syncs it.
conf_write() {
	dd if="$conf_t/$3" of="$1" bs=$CONF_MiB seek="$2" conv=notrunc,fsync \
		2>"$conf_t/err.dd" || conf_die "cannot write '$1': $(cat "$conf_t/err.dd")"
}

# conf_rsum PATH OFF_MIB CNT_MIB: checksum of a range of PATH.
conf_rsum() {
	dd if="$1" bs=$CONF_MiB skip="$2" count="$3" 2>/dev/null | conf_sum
}

conf_fsum() {
	conf_sum <"$1"
}

conf_size() {
	wc -c <"$1" | awk '{ print $1 }'
}

# conf_export VM:VOL END_MIB NAME: the first END_MIB MiB of the committed
# content, through `volume export VM:VOL -`, into $conf_t/NAME.  Volumes are
# large and sparse; only their head is read.
conf_export() {
	conf_q volume export "$1" - 2>"$conf_t/err.export" |
		head -c $(($2 * CONF_MiB)) >"$conf_t/$3"
	conf_n=$(conf_size "$conf_t/$3")
	[ "$conf_n" -eq $(($2 * CONF_MiB)) ] ||
		conf_die "'volume export $1 -' gave $conf_n bytes: $(cat "$conf_t/err.export")"
}

# conf_esum VM:VOL OFF_MIB CNT_MIB: checksum of a range of the committed content.
conf_esum() {
	conf_export "$1" $(($2 + $3)) exp.tmp
	conf_rsum "$conf_t/exp.tmp" "$2" "$3"
}

conf_opt() {
	echo "$CONF_POOL_OPTS" | awk -F, -v k="$1" '{
		for (i = 1; i <= NF; i++)
			if (index($i, k "=") == 1) print substr($i, length(k) + 2)
	}'
}

# No file or device left over by an interrupted operation.
conf_check_stray() {
	if command -v CONF_CHECK_STRAY >/dev/null 2>&1; then
		CONF_CHECK_STRAY || conf_die "stray files or devices left in pool '$CONF_POOL'"
		return 0
	fi
	if [ -n "$CONF_CHECK_STRAY" ]; then
		eval "$CONF_CHECK_STRAY" || conf_die "stray files or devices left in pool '$CONF_POOL'"
		return 0
	fi
	case $CONF_DRIVER in
	file-reflink)
		conf_dir=$(conf_opt dir_path)
		[ -d "$conf_dir" ] || conf_die "pool folder '$conf_dir' missing"
		conf_s=$(find "$conf_dir" \( -name '*~*' -o -name '*-import.img' \) -print)
		[ -z "$conf_s" ] || conf_die "stray files in '$conf_dir':" $conf_s
		;;
	esac
}

# ---- tests -----------------------------------------------------------------

# A running AppVM keeps the template root it started with; it sees the
# template's update after a restart.
conf_t_update_propagation() {
	t=up-tpl a=up-app
	conf_vm $t TemplateVM
	conf_vm $a AppVM $t
	conf_rand old 2
	conf_rand new 2
	conf_start $t
	d=$(conf_dev $t root) || exit 1
	conf_write "$d" 1 old
	conf_stop $t
	old=$(conf_fsum "$conf_t/old")
	new=$(conf_fsum "$conf_t/new")

	conf_start $a
	ad=$(conf_dev $a root) || exit 1
	conf_expect "app root after start" "$old" "$(conf_rsum "$ad" 1 2)"
	conf_expect_info $a:root is_outdated False

	conf_start $t
	d=$(conf_dev $t root) || exit 1
	conf_write "$d" 1 new
	conf_stop $t
	conf_expect "template root committed" "$new" "$(conf_esum $t:root 1 2)"

	conf_expect "running app root after template update" "$old" "$(conf_rsum "$ad" 1 2)"
	conf_expect_info $a:root is_outdated True

	conf_stop $a
	conf_start $a
	ad=$(conf_dev $a root) || exit 1
	conf_expect "app root after restart" "$new" "$(conf_rsum "$ad" 1 2)"
	conf_expect_info $a:root is_outdated False
	conf_stop $a
}

# A DispVM starts from the committed state of its sources every time.
conf_t_disposable_reset() {
	t=dr-tpl a=dr-app d=dr-disp
	conf_vm $t TemplateVM
	conf_vm $a AppVM $t
	conf_vm $d DispVM $a
	conf_rand troot 1
	conf_rand apriv 2
	conf_rand junk 2
	conf_zero zero 2

	conf_start $t
	p=$(conf_dev $t root) || exit 1
	conf_write "$p" 1 troot
	conf_stop $t
	conf_start $a
	p=$(conf_dev $a private) || exit 1
	conf_write "$p" 1 apriv
	conf_stop $a
	conf_expect_info $d:volatile size $((12 * 1024 * CONF_MiB))

	conf_start $d
	r=$(conf_dev $d root) || exit 1
	p=$(conf_dev $d private) || exit 1
	v=$(conf_dev $d volatile) || exit 1
	conf_expect "disposable root is the template's" "$(conf_fsum "$conf_t/troot")" \
		"$(conf_rsum "$r" 1 1)"
	conf_expect "disposable private is the app's committed private" \
		"$(conf_fsum "$conf_t/apriv")" "$(conf_rsum "$p" 1 2)"
	conf_write "$r" 1 junk
	conf_write "$r" 4 junk
	conf_write "$p" 1 junk
	conf_write "$p" 4 junk
	conf_write "$v" 0 junk
	conf_stop $d

	conf_start $d
	r=$(conf_dev $d root) || exit 1
	p=$(conf_dev $d private) || exit 1
	v=$(conf_dev $d volatile) || exit 1
	conf_expect "disposable root after restart" "$(conf_fsum "$conf_t/troot")" \
		"$(conf_rsum "$r" 1 1)"
	conf_expect "disposable root write discarded" "$(conf_fsum "$conf_t/zero")" \
		"$(conf_rsum "$r" 4 2)"
	conf_expect "disposable private after restart" "$(conf_fsum "$conf_t/apriv")" \
		"$(conf_rsum "$p" 1 2)"
	conf_expect "disposable private write discarded" "$(conf_fsum "$conf_t/zero")" \
		"$(conf_rsum "$p" 4 2)"
	conf_expect "disposable volatile is empty" "$(conf_fsum "$conf_t/zero")" \
		"$(conf_rsum "$v" 0 2)"
	conf_stop $d
	conf_expect "app private untouched by its disposable" "$(conf_fsum "$conf_t/apriv")" \
		"$(conf_esum $a:private 1 2)"
}

# Origins commit at stop; after a crash (reboot) the next start resumes the
# uncommitted data.
conf_t_origin_commit() {
	t=oc-tpl
	conf_vm $t TemplateVM
	conf_rand p1 2
	conf_rand p2 1
	conf_rand r1 1
	conf_start $t
	p=$(conf_dev $t private) || exit 1
	conf_write "$p" 1 p1
	conf_expect_info $t:private is_dirty True
	conf_stop $t
	conf_expect_info $t:private is_dirty False
	conf_expect "private committed" "$(conf_fsum "$conf_t/p1")" "$(conf_esum $t:private 1 2)"
	conf_start $t
	p=$(conf_dev $t private) || exit 1
	conf_expect "private after restart" "$(conf_fsum "$conf_t/p1")" "$(conf_rsum "$p" 1 2)"
	conf_stop $t

	# Written while running, then the machine "reboots" without a stop.
	conf_start $t
	p=$(conf_dev $t private) || exit 1
	r=$(conf_dev $t root) || exit 1
	conf_write "$p" 4 p2
	conf_write "$r" 1 r1
	conf_boot="$conf_boot-rebooted"
	conf_expect_info $t:private is_dirty True
	conf_expect_info $t:root is_dirty True
	conf_expect "export during the crash holds the last commit" \
		"$(conf_fsum "$conf_t/p1")" "$(conf_esum $t:private 1 2)"
	conf_start $t
	p=$(conf_dev $t private) || exit 1
	r=$(conf_dev $t root) || exit 1
	conf_expect "private resumed after the crash" "$(conf_fsum "$conf_t/p2")" \
		"$(conf_rsum "$p" 4 1)"
	conf_expect "older private data kept" "$(conf_fsum "$conf_t/p1")" "$(conf_rsum "$p" 1 2)"
	conf_expect "root resumed after the crash" "$(conf_fsum "$conf_t/r1")" "$(conf_rsum "$r" 1 1)"
	conf_stop $t
	conf_expect_info $t:private is_dirty False
	conf_expect "resumed private committed" "$(conf_fsum "$conf_t/p2")" \
		"$(conf_esum $t:private 4 1)"
	conf_expect "resumed root committed" "$(conf_fsum "$conf_t/r1")" "$(conf_esum $t:root 1 1)"
}

# conf_nrev VM:VOL: number of revisions.
conf_nrev() {
	conf_info "$1" revisions | awk 'NF { n++ } END { print n + 0 }'
}

# revisions_to_keep bounds the kept revisions; revert restores exact bytes.
conf_t_revisions() {
	t=rv-tpl e=rv-empty
	conf_vm $t TemplateVM
	conf_vm $e TemplateVM
	conf_ok volume config $t:private revisions_to_keep 2
	conf_expect_info $t:private revisions_to_keep 2
	i=1
	while [ $i -le 4 ]; do
		conf_rand c$i 2
		conf_start $t
		p=$(conf_dev $t private) || exit 1
		conf_write "$p" 1 c$i
		conf_stop $t
		conf_expect "commit $i" "$(conf_fsum "$conf_t/c$i")" "$(conf_esum $t:private 1 2)"
		i=$((i + 1))
	done
	n=$(conf_nrev $t:private) || exit 1
	conf_expect "revisions kept after 4 commits" 2 "$n"
	# Kept: the contents before commits 3 and 4, i.e. commits 2 and 3.
	oldest=$(conf_info $t:private revisions | awk 'NF { print $1; exit }') || exit 1
	[ -n "$oldest" ] || conf_die "no revision listed"
	conf_ok volume revert $t:private "$oldest"
	conf_expect "revert to the oldest kept revision" "$(conf_fsum "$conf_t/c2")" \
		"$(conf_esum $t:private 1 2)"
	conf_expect_info $t:private is_dirty False
	conf_start $t
	p=$(conf_dev $t private) || exit 1
	conf_expect "reverted data seen at start" "$(conf_fsum "$conf_t/c2")" "$(conf_rsum "$p" 1 2)"
	conf_stop $t

	# A volume never committed has no revision to revert to.
	n=$(conf_nrev $e:private) || exit 1
	conf_expect "revisions of a new volume" 0 "$n"
	conf_fails volume revert $e:private
	# Nor has one with revisions_to_keep 0.
	conf_ok volume config $e:private revisions_to_keep 0
	conf_start $e
	conf_stop $e
	n=$(conf_nrev $e:private) || exit 1
	conf_expect "revisions with revisions_to_keep 0" 0 "$n"
	conf_fails volume revert $e:private
}

# Grow works; shrink needs -f; data is kept.
conf_t_resize() {
	t=rs-tpl
	conf_vm $t TemplateVM
	conf_rand p 2
	conf_start $t
	d=$(conf_dev $t private) || exit 1
	conf_write "$d" 1 p
	conf_stop $t
	conf_expect_info $t:private size $((2048 * CONF_MiB))
	conf_ok volume resize $t:private 3GiB
	conf_expect_info $t:private size $((3072 * CONF_MiB))
	conf_expect "data kept by grow" "$(conf_fsum "$conf_t/p")" "$(conf_esum $t:private 1 2)"
	conf_fails volume resize $t:private 1GiB
	conf_expect_info $t:private size $((3072 * CONF_MiB))
	conf_expect "data kept by a refused shrink" "$(conf_fsum "$conf_t/p")" \
		"$(conf_esum $t:private 1 2)"
	conf_ok volume resize $t:private 1GiB -f
	conf_expect_info $t:private size $((1024 * CONF_MiB))
	conf_expect "data kept by shrink" "$(conf_fsum "$conf_t/p")" "$(conf_esum $t:private 1 2)"

	# Grow while running: the running copy grows and the size sticks.
	conf_start $t
	conf_ok volume resize $t:private 2GiB
	conf_expect_info $t:private size $((2048 * CONF_MiB))
	conf_stop $t
	conf_expect_info $t:private size $((2048 * CONF_MiB))
	conf_expect "data kept by grow while running" "$(conf_fsum "$conf_t/p")" \
		"$(conf_esum $t:private 1 2)"
	conf_start $t
	d=$(conf_dev $t private) || exit 1
	conf_expect "data seen after grow" "$(conf_fsum "$conf_t/p")" "$(conf_rsum "$d" 1 2)"
	conf_stop $t
}

# Import from a file and from stdin, export, clone, clear.
conf_t_import_export() {
	a=ie-one b=ie-two
	conf_vm $a TemplateVM
	conf_vm $b TemplateVM
	conf_rand img1 8
	conf_rand img2 4
	conf_rand img3 8
	conf_zero zero4 4

	conf_ok volume import $a:private "$conf_t/img1"
	conf_expect_info $a:private size $((8 * CONF_MiB))
	conf_ok volume export $a:private "$conf_t/out1"
	cmp "$conf_t/img1" "$conf_t/out1" || conf_die "export after import from a file differs"

	conf_q volume import $b:private - --size $((4 * CONF_MiB)) <"$conf_t/img2" \
		>/dev/null 2>"$conf_t/err" || conf_die "import from stdin failed: $(cat "$conf_t/err")"
	conf_expect_info $b:private size $((4 * CONF_MiB))
	conf_ok volume export $b:private "$conf_t/out2"
	cmp "$conf_t/img2" "$conf_t/out2" || conf_die "export after import from stdin differs"
	conf_q volume export $b:private - >"$conf_t/out2s" 2>"$conf_t/err" ||
		conf_die "export to stdout failed: $(cat "$conf_t/err")"
	cmp "$conf_t/img2" "$conf_t/out2s" || conf_die "export to stdout differs"

	# --no-resize needs the volume's own size.
	conf_fails volume import $a:private "$conf_t/img2" --no-resize
	conf_ok volume export $a:private "$conf_t/out1"
	cmp "$conf_t/img1" "$conf_t/out1" || conf_die "refused import changed the volume"
	conf_ok volume import $a:private "$conf_t/img3" --no-resize
	conf_ok volume export $a:private "$conf_t/out3"
	cmp "$conf_t/img3" "$conf_t/out3" || conf_die "import --no-resize differs"

	# Export of a running volume gives the data from before its start.
	conf_start $a
	p=$(conf_dev $a private) || exit 1
	conf_write "$p" 0 zero4
	conf_ok volume export $a:private "$conf_t/out3r"
	cmp "$conf_t/img3" "$conf_t/out3r" || conf_die "export while running is not the committed data"
	conf_stop $a
	conf_ok volume import $a:private "$conf_t/img3"

	conf_ok volume clone $a:private $b:private -f
	conf_expect_info $b:private size $((8 * CONF_MiB))
	conf_ok volume export $b:private "$conf_t/outc"
	cmp "$conf_t/img3" "$conf_t/outc" || conf_die "clone differs from its source"
	conf_ok volume export $a:private "$conf_t/out3"
	cmp "$conf_t/img3" "$conf_t/out3" || conf_die "clone changed its source"
	conf_start $b
	p=$(conf_dev $b private) || exit 1
	conf_expect "cloned data at start" "$(conf_fsum "$conf_t/img3")" "$(conf_rsum "$p" 0 8)"
	conf_stop $b

	conf_ok volume clear $b:private -f
	conf_ok volume export $b:private "$conf_t/outz"
	n=$(conf_info $b:private size) || exit 1
	conf_expect "export size after clear" "$n" "$(conf_size "$conf_t/outz")"
	conf_zero zero8 $((n / CONF_MiB))
	cmp "$conf_t/zero8" "$conf_t/outz" || conf_die "cleared volume is not zero"
	conf_ok volume export $a:private "$conf_t/out3"
	cmp "$conf_t/img3" "$conf_t/out3" || conf_die "clear of the clone changed its source"
}

# Volatile volumes start empty every time.
conf_t_volatile() {
	t=vo-tpl a=vo-app
	conf_vm $t TemplateVM
	conf_vm $a AppVM $t
	conf_rand junk 1
	conf_zero zero 1
	z=$(conf_fsum "$conf_t/zero")
	for vm in $t $a; do
		conf_expect_info $vm:volatile size $((10240 * CONF_MiB))
		conf_expect_info $vm:volatile save_on_stop False
		conf_expect_info $vm:volatile snap_on_start False
		i=1
		while [ $i -le 2 ]; do
			conf_start $vm
			v=$(conf_dev $vm volatile) || exit 1
			conf_expect "$vm volatile at start $i (head)" "$z" "$(conf_rsum "$v" 0 1)"
			conf_expect "$vm volatile at start $i (at 5 MiB)" "$z" "$(conf_rsum "$v" 5 1)"
			conf_write "$v" 0 junk
			conf_write "$v" 5 junk
			conf_stop $vm
			i=$((i + 1))
		done
	done
}

# Volume properties per class, usage is a number.
conf_t_properties() {
	t=pr-tpl a=pr-app d=pr-disp s=pr-alone
	conf_vm $t TemplateVM
	conf_vm $s StandaloneVM
	conf_vm $a AppVM $t
	conf_vm $d DispVM $a
	for vm in $t $s; do
		for vol in root private; do
			conf_expect_info $vm:$vol pool "$CONF_POOL"
			conf_expect_info $vm:$vol rw True
			conf_expect_info $vm:$vol save_on_stop True
			conf_expect_info $vm:$vol snap_on_start False
			conf_expect_info $vm:$vol is_dirty False
		done
		conf_expect_info $vm:root size $((10240 * CONF_MiB))
		conf_expect_info $vm:private size $((2048 * CONF_MiB))
	done
	troot=$(conf_info $t:root vid) || exit 1
	apriv=$(conf_info $a:private vid) || exit 1
	[ -n "$troot" ] && [ -n "$apriv" ] || conf_die "empty vid"
	conf_expect_info $a:root snap_on_start True
	conf_expect_info $a:root save_on_stop False
	conf_expect_info $a:root source "$troot"
	conf_expect_info $a:private save_on_stop True
	conf_expect_info $a:private snap_on_start False
	conf_expect_info $d:root snap_on_start True
	conf_expect_info $d:root source "$troot"
	conf_expect_info $d:private snap_on_start True
	conf_expect_info $d:private save_on_stop False
	conf_expect_info $d:private source "$apriv"
	for spec in $t:root $t:private $a:private; do
		u=$(conf_info $spec usage) || exit 1
		echo "$u" | grep -Eq '^[0-9]+$' || conf_die "$spec usage is not a number: '$u'"
	done
	conf_start $t
	u=$(conf_info $t:private usage) || exit 1
	echo "$u" | grep -Eq '^[0-9]+$' || conf_die "usage while running is not a number: '$u'"
	conf_stop $t

	conf_ok volume list -p "$CONF_POOL" $t
	for vol in root private volatile; do
		grep -Eq "[[:space:]]$t[[:space:]]+$vol([[:space:]]|\$)" "$conf_t/out" ||
			conf_die "'volume list -p $CONF_POOL $t' has no row for $vol"
	done
}

# ---- crash consistency -----------------------------------------------------

# conf_one_of WHAT ACTUAL OLD NEW
conf_one_of() {
	[ "$2" = "$3" ] || [ "$2" = "$4" ] ||
		conf_die "$1 is neither the old nor the new content (a mixture?)"
}

# A template's stop, interrupted after every step in turn.
conf_t_crash_stop() {
	t=cs-tpl
	conf_vm $t TemplateVM
	conf_zero zero 4
	old_r=$(conf_fsum "$conf_t/zero")
	old_p=$old_r
	k=1
	while :; do
		[ $k -le 100 ] || conf_die "'vm stop' still crashing at step 100"
		conf_start $t
		r=$(conf_dev $t root) || exit 1
		p=$(conf_dev $t private) || exit 1
		# A marker at the head and data further on, different on each run.
		conf_rand m 1
		conf_rand n 2
		conf_write "$r" 0 m
		conf_write "$r" 2 n
		conf_rand m 1
		conf_rand n 2
		conf_write "$p" 0 m
		conf_write "$p" 2 n
		new_r=$(conf_rsum "$r" 0 4)
		new_p=$(conf_rsum "$p" 0 4)

		conf_qc $k vm stop $t >/dev/null 2>"$conf_t/err.crash"
		rc=$?
		case $rc in
		0)
			[ $k -gt 1 ] || conf_die "QPOOL_CRASH_AFTER=1 did not crash 'vm stop'"
			conf_expect "root after an uninterrupted stop" "$new_r" "$(conf_esum $t:root 0 4)"
			conf_expect "private after an uninterrupted stop" "$new_p" \
				"$(conf_esum $t:private 0 4)"
			echo "vm stop has $((k - 1)) steps"
			break
			;;
		99) ;;
		*) conf_die "'vm stop' with QPOOL_CRASH_AFTER=$k exited $rc: $(cat "$conf_t/err.crash")" ;;
		esac
		conf_one_of "root after a crash at step $k" "$(conf_esum $t:root 0 4)" "$old_r" "$new_r"
		conf_one_of "private after a crash at step $k" "$(conf_esum $t:private 0 4)" \
			"$old_p" "$new_p"
		if conf_running $t; then
			conf_ok vm stop $t
		else
			conf_start $t
			r=$(conf_dev $t root) || exit 1
			p=$(conf_dev $t private) || exit 1
			conf_expect "root seen at the start after a crash at step $k" "$new_r" \
				"$(conf_rsum "$r" 0 4)"
			conf_expect "private seen at the start after a crash at step $k" "$new_p" \
				"$(conf_rsum "$p" 0 4)"
			conf_stop $t
		fi
		conf_expect "root completed after a crash at step $k" "$new_r" "$(conf_esum $t:root 0 4)"
		conf_expect "private completed after a crash at step $k" "$new_p" \
			"$(conf_esum $t:private 0 4)"
		conf_expect_info $t:root is_dirty False
		conf_expect_info $t:private is_dirty False
		old_r=$new_r
		old_p=$new_p
		k=$((k + 1))
	done
	conf_start $t
	conf_stop $t
	conf_expect "root after a last start and stop" "$new_r" "$(conf_esum $t:root 0 4)"
	conf_expect "private after a last start and stop" "$new_p" "$(conf_esum $t:private 0 4)"
	conf_check_stray
}

# conf_crash_start VM CHECKFN: `vm start VM` interrupted after every step in
# turn; after each crash a clean start must work and CHECKFN checks what it
# attached.
conf_crash_start() {
	vm=$1 check=$2
	k=1
	while :; do
		[ $k -le 100 ] || conf_die "'vm start $vm' still crashing at step 100"
		conf_qc $k vm start $vm >"$conf_t/att.$vm" 2>"$conf_t/err.crash"
		rc=$?
		case $rc in
		0)
			[ $k -gt 1 ] || conf_die "QPOOL_CRASH_AFTER=1 did not crash 'vm start $vm'"
			$check
			conf_stop $vm
			echo "vm start $vm has $((k - 1)) steps"
			break
			;;
		99) ;;
		*) conf_die "'vm start $vm' with QPOOL_CRASH_AFTER=$k exited $rc: $(cat "$conf_t/err.crash")" ;;
		esac
		if conf_running $vm; then
			conf_ok vm stop $vm
		fi
		conf_start $vm
		$check
		conf_stop $vm
		k=$((k + 1))
	done
	conf_start $vm
	$check
	conf_stop $vm
	conf_check_stray
}

# What a start of cr-app must attach: the template's root, the app's
# private, an empty volatile.  Writes junk that the next start must not see.
conf_check_app() {
	r=$(conf_dev $a root) || exit 1
	p=$(conf_dev $a private) || exit 1
	v=$(conf_dev $a volatile) || exit 1
	conf_expect "app root" "$(conf_fsum "$conf_t/troot")" "$(conf_rsum "$r" 1 1)"
	conf_expect "app private" "$(conf_fsum "$conf_t/apriv")" "$(conf_rsum "$p" 1 1)"
	conf_expect "app volatile" "$(conf_fsum "$conf_t/zero")" "$(conf_rsum "$v" 1 1)"
	conf_write "$r" 1 junk
	conf_write "$v" 1 junk
}

conf_t_crash_start_app() {
	t=cr-tpl a=cr-app
	conf_vm $t TemplateVM
	conf_vm $a AppVM $t
	conf_rand troot 1
	conf_rand apriv 1
	conf_rand junk 1
	conf_zero zero 1
	conf_start $t
	p=$(conf_dev $t root) || exit 1
	conf_write "$p" 1 troot
	conf_stop $t
	conf_start $a
	p=$(conf_dev $a private) || exit 1
	conf_write "$p" 1 apriv
	conf_stop $a
	conf_crash_start $a conf_check_app
	conf_expect "app private committed" "$(conf_fsum "$conf_t/apriv")" \
		"$(conf_esum $a:private 1 1)"
}

# What a start of cst-tpl must attach: its committed root and private.
conf_check_tpl() {
	r=$(conf_dev $t root) || exit 1
	p=$(conf_dev $t private) || exit 1
	conf_expect "template root" "$(conf_fsum "$conf_t/troot")" "$(conf_rsum "$r" 1 1)"
	conf_expect "template private" "$(conf_fsum "$conf_t/tpriv")" "$(conf_rsum "$p" 1 1)"
}

conf_t_crash_start_template() {
	t=cst-tpl
	conf_vm $t TemplateVM
	conf_rand troot 1
	conf_rand tpriv 1
	conf_start $t
	p=$(conf_dev $t root) || exit 1
	conf_write "$p" 1 troot
	p=$(conf_dev $t private) || exit 1
	conf_write "$p" 1 tpriv
	conf_stop $t
	conf_crash_start $t conf_check_tpl
	conf_expect "template root committed" "$(conf_fsum "$conf_t/troot")" "$(conf_esum $t:root 1 1)"
	conf_expect "template private committed" "$(conf_fsum "$conf_t/tpriv")" \
		"$(conf_esum $t:private 1 1)"
}

# `volume import`, interrupted after every step in turn: the volume holds the
# old or the new image (with its size), never a mixture, and a new import works.
conf_t_crash_import() {
	t=ci-tpl
	conf_vm $t TemplateVM
	conf_rand old 8
	conf_ok volume import $t:private "$conf_t/old"
	k=1
	while :; do
		[ $k -le 100 ] || conf_die "'volume import' still crashing at step 100"
		# Alternate sizes, so the size must follow the content.  Sizes
		# are multiples of 4 MiB, which every driver can represent exactly.
		conf_rand new $((8 + 4 * (k % 2)))
		conf_qc $k volume import $t:private "$conf_t/new" >/dev/null 2>"$conf_t/err.crash"
		rc=$?
		case $rc in
		0)
			[ $k -gt 1 ] || conf_die "QPOOL_CRASH_AFTER=1 did not crash 'volume import'"
			conf_ok volume export $t:private "$conf_t/out"
			cmp -s "$conf_t/new" "$conf_t/out" || conf_die "uninterrupted import differs"
			echo "volume import has $((k - 1)) steps"
			break
			;;
		99) ;;
		*) conf_die "'volume import' with QPOOL_CRASH_AFTER=$k exited $rc: $(cat "$conf_t/err.crash")" ;;
		esac
		conf_ok volume export $t:private "$conf_t/out"
		n=$(conf_info $t:private size) || exit 1
		conf_expect "size of the export after a crash at step $k" "$n" \
			"$(conf_size "$conf_t/out")"
		cmp -s "$conf_t/old" "$conf_t/out" || cmp -s "$conf_t/new" "$conf_t/out" ||
			conf_die "private after a crash of import at step $k is neither old nor new"
		conf_ok volume import $t:private "$conf_t/new"
		conf_ok volume export $t:private "$conf_t/out"
		cmp -s "$conf_t/new" "$conf_t/out" || conf_die "import after a crash at step $k differs"
		mv "$conf_t/new" "$conf_t/old"
		k=$((k + 1))
	done
	conf_start $t
	p=$(conf_dev $t private) || exit 1
	conf_expect "imported data at start" "$(conf_fsum "$conf_t/new")" \
		"$(conf_rsum "$p" 0 $(($(conf_size "$conf_t/new") / CONF_MiB)))"
	conf_stop $t
	conf_check_stray
}

# ---- driver ----------------------------------------------------------------

# conf_run NAME FUNCTION
conf_run() {
	case " ${CONF_ONLY:-$1} " in
	*" $1 "*) ;;
	*) return 0 ;;
	esac
	conf_t=$CONF_TMP/$1
	rm -rf "$conf_t"
	mkdir -p "$conf_t" || { echo "FAIL: conformance/$conf_label/$1"; return 1; }
	: >"$conf_t/vms"
	if ("$2") >"$conf_t/log" 2>&1; then
		echo "PASS: conformance/$conf_label/$1"
		[ -z "${CONF_VERBOSE:-}" ] || sed 's/^/  # /' "$conf_t/log"
		conf_npass=$((conf_npass + 1))
		# Remove the test's VMs, newest first; keep them when it failed.
		for conf_vm in $(awk '{ l[NR] = $0 } END { for (i = NR; i > 0; i--) print l[i] }' \
			"$conf_t/vms"); do
			conf_q vm stop --force "$conf_vm" >/dev/null 2>&1
			conf_q vm remove "$conf_vm" >/dev/null 2>&1
		done
		rm -rf "$conf_t"
	else
		echo "FAIL: conformance/$conf_label/$1"
		awk '{ l[NR % 40] = $0 } END {
			for (i = NR - 39; i <= NR; i++) if (i > 0) print "  # " l[i % 40] }' "$conf_t/log"
		conf_nfail=$((conf_nfail + 1))
	fi
}

conf_main() {
	for conf_var in QPOOL QPOOL_ROOT CONF_POOL CONF_DRIVER CONF_POOL_OPTS; do
		eval "conf_val=\${$conf_var:-}"
		if [ -z "$conf_val" ]; then
			echo "conformance.sh: $conf_var is not set" >&2
			return 2
		fi
	done
	unset QPOOL_CRASH_AFTER QPOOL_STEP_TRACE
	conf_label=${CONF_LABEL:-$CONF_DRIVER}
	conf_boot=conformance-boot-1
	CONF_TMP=${CONF_TMP:-$QPOOL_ROOT/conf-tmp}
	conf_npass=0
	conf_nfail=0
	mkdir -p "$CONF_TMP" || return 1

	if ! conf_q pool add "$CONF_POOL" "$CONF_DRIVER" -o "$CONF_POOL_OPTS" \
		>"$CONF_TMP/pool-add.log" 2>&1; then
		echo "FAIL: conformance/$conf_label/pool-add"
		sed 's/^/  # /' "$CONF_TMP/pool-add.log"
		return 1
	fi
	echo "PASS: conformance/$conf_label/pool-add"

	conf_run update-propagation conf_t_update_propagation
	conf_run disposable-reset conf_t_disposable_reset
	conf_run origin-commit conf_t_origin_commit
	conf_run revisions conf_t_revisions
	conf_run resize conf_t_resize
	conf_run import-export conf_t_import_export
	conf_run volatile conf_t_volatile
	conf_run properties conf_t_properties
	conf_run crash-stop conf_t_crash_stop
	conf_run crash-start-app conf_t_crash_start_app
	conf_run crash-start-template conf_t_crash_start_template
	conf_run crash-import conf_t_crash_import

	echo "# conformance/$conf_label done: $conf_npass PASS, $conf_nfail FAIL" >&2
	[ "$conf_nfail" -eq 0 ]
}

conf_main
