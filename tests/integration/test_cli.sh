#!/bin/sh
# The qpool command line: errors on unknown objects and bad names, usage
# errors, --help of every command, the qvm-pool/qvm-volume aliases, pool
# add/remove refusals and a full file system.
. "$(dirname "$0")/../lib.sh"

MiB=1048576

# ---- helpers ---------------------------------------------------------------

# fails_with STATUS ERE CMD...: CMD exits STATUS, its stderr has a line
# "qpool: ..." matching ERE, and qubes.xml is unchanged.
fails_with() {
	_st=$1
	_pat=$2
	shift 2
	qp_run "$@"
	[ -z "${QP_SHOW:-}" ] || printf '  %s -> %s %s\n' "$*" "$QP_RC" "$QP_STDERR" >&2
	assert_eq "$QP_RC" "$_st" "exit status of '$*' (stderr: $QP_STDERR)"
	printf '%s\n' "$QP_STDERR" | grep -Eq "^qpool: .*($_pat)" ||
		_qp_failed "stderr of '$*' has no 'qpool: ' line matching /$_pat/: $QP_STDERR"
	xml_same "$@"
}

# fails_usage CMD...: exit status 2 with a usage line.
fails_usage() {
	qp_run "$@"
	assert_eq "$QP_RC" 2 "exit status of the usage error '$*' (stderr: $QP_STDERR)"
	assert_match 'usage:' "$QP_STDERR"
	case $QP_STDOUT in
	*[![:space:]]*) _qp_failed "usage error '$*' printed on stdout: $QP_STDOUT" ;;
	esac
}

# vm_state NAME: its STATE column in `vm list` (empty when absent).
vm_state() {
	qp vm list | awk -v n="$1" '$1 == n { print $NF }'
}

# stray DIR: fails when DIR holds files of an interrupted operation.
no_stray() {
	_s=$(find "$1" \( -name '*~*' -o -name '*-import.img' \) -print)
	[ -z "$_s" ] || _qp_failed "stray files left: $_s"
}

# ---- tests -----------------------------------------------------------------

t_unknown() {
	assert_ok qp vm create --class TemplateVM tpl
	printf 'x' >"$TEST_TMP/one-byte"
	xml_keep
	fails_with 1 nopool qp pool info nopool
	fails_with 1 nopool qp pool remove nopool
	fails_with 1 nopool qp pool set nopool -o revisions_to_keep=2
	fails_with 1 nodriver qp pool add p2 nodriver -o dir_path="$TEST_TMP/p2"
	assert_not_exists "$TEST_TMP/p2"
	fails_with 1 novm qp vm start novm
	fails_with 1 novm qp vm stop novm
	fails_with 1 novm qp vm remove novm
	fails_with 1 novm qp vm create --class AppVM --template novm app
	fails_with 1 nopool qp vm create --class TemplateVM -P nopool tpl2
	fails_with 1 novm qp volume info novm:root
	fails_with 1 novol qp volume info tpl:novol
	fails_with 1 novm qp volume list novm
	fails_with 1 nopool qp volume list -p nopool
	fails_with 1 novol qp volume resize tpl:novol 20GiB
	fails_with 1 novm qp volume revert novm:private
	fails_with 1 novm qp volume config novm:private rw False
	fails_with 1 novm qp volume import novm:private "$TEST_TMP/one-byte"
	fails_with 1 novol qp volume export tpl:novol "$TEST_TMP/out"
	assert_not_exists "$TEST_TMP/out"
	fails_with 1 novm qp volume clone novm:private tpl:private -f
	fails_with 1 novm qp volume clone tpl:private novm:private -f
	fails_with 1 novm qp volume clear novm:private -f
	fails_with 1 missing qp volume import tpl:private "$TEST_TMP/missing"
	assert_eq "$(qp vm list | awk 'NR > 1 { print $1 }')" tpl "VMs after the failures"
}

t_invalid_names() {
	assert_ok qp vm create --class TemplateVM base
	xml_keep
	long=a234567890123456789012345678901
	for n in 'a/b' '..' '.' '-x' '.x' "${long}b" '' 'a b' 'a:b' '../x'; do
		qp_run qp vm create --class TemplateVM -- "$n"
		[ "$QP_RC" != 0 ] || _qp_failed "'vm create -- $n' succeeded"
		xml_same vm create "$n"
		qp_run qp pool add -- "$n" file-reflink -o dir_path="$TEST_TMP/np",setup_check=False
		[ "$QP_RC" != 0 ] || _qp_failed "'pool add -- $n' succeeded"
		xml_same pool add "$n"
		assert_not_exists "$TEST_TMP/np"
	done
	fails_usage qp vm create --class TemplateVM -x
	xml_same vm create -x
	# Nothing in the default pool but base's volumes.
	_f=$(find "$QPOOL_ROOT" -mindepth 1 \( -name qubes.xml -o -name 'qubes.xml.lock' \
		-o -path '*/base' -o -path '*/base/*' -o -name vm-templates -o -name appvms \
		-o -name pool-default -o -name '.*' \) -prune -o -print)
	[ -z "$_f" ] || _qp_failed "files created by invalid names: $_f"
	# 31 characters are fine.
	assert_ok qp vm create --class TemplateVM "$long"
	assert_eq "$(vm_state "$long")" Halted "state of the 31-character VM"
}

t_usage_errors() {
	assert_ok qp vm create --class TemplateVM t
	xml_keep
	fails_usage qp
	fails_usage qp nosuchcommand
	fails_usage qp --bogus pool list
	fails_usage qp --root
	fails_usage qp vm
	fails_usage qp vm nosuchcommand
	fails_usage qp vm create
	fails_usage qp vm create --class TemplateVM a b
	fails_usage qp vm create --bogus x
	fails_usage qp vm create --class
	fails_usage qp vm start
	fails_usage qp vm start a b
	fails_usage qp vm stop
	fails_usage qp vm remove
	fails_usage qp pool nosuchcommand
	fails_usage qp pool add
	fails_usage qp pool add p1
	fails_usage qp pool add p1 file-reflink -o novalue
	fails_usage qp pool add p1 file-reflink -o
	fails_usage qp pool info
	fails_usage qp volume nosuchcommand
	fails_usage qp volume info
	fails_usage qp volume info t:root size extra
	fails_usage qp volume config t:root rw
	fails_usage qp volume resize t:root
	fails_usage qp volume resize t:root 3GiB --bogus
	fails_usage qp volume revert
	fails_usage qp volume import t:private
	fails_usage qp volume export
	fails_usage qp volume clone t:private
	fails_usage qp volume clear
	xml_same usage errors
}

# help_has CMD... -- WORD...: CMD exits 0 and prints a usage line and every WORD.
help_has() {
	_n=0
	for _a in "$@"; do
		_n=$((_n + 1))
		[ "$_a" = -- ] && break
	done
	_cmd=
	_i=0
	for _a in "$@"; do
		_i=$((_i + 1))
		[ "$_i" -lt "$_n" ] && _cmd="$_cmd $_a"
	done
	# shellcheck disable=SC2086 # words without blanks
	qp_run $_cmd
	assert_eq "$QP_RC" 0 "exit status of '$_cmd' (stderr: $QP_STDERR)"
	assert_match 'usage:' "$QP_STDOUT"
	shift "$_n"
	for _w in "$@"; do
		case $QP_STDOUT in
		*"$_w"*) ;;
		*) _qp_failed "'$_cmd' does not mention '$_w'" ;;
		esac
	done
}

t_help() {
	help_has qp --help -- --root pool volume vm
	help_has qp -h -- --root
	help_has qp pool --help -- add remove list info set drivers
	help_has qp volume --help -- list info config resize revert import export clone clear
	help_has qp vm --help -- create start stop remove list
	help_has qp pool add --help -- POOL DRIVER -o --help
	help_has qp pool add -h -- -o
	help_has qp pool remove --help -- POOL --help
	help_has qp pool list --help -- --help
	help_has qp pool info --help -- POOL --help
	help_has qp pool set --help -- POOL -o revisions_to_keep ephemeral_volatile
	help_has qp pool drivers --help -- --help
	help_has qp vm create --help -- --class --template --label -P TemplateVM DispVM
	help_has qp vm start --help -- NAME --help
	help_has qp vm stop --help -- NAME --force
	help_has qp vm remove --help -- NAME --help
	help_has qp vm list --help -- --help
	help_has qp volume list --help -- -p --pool
	help_has qp volume info --help -- VM:VOLUME PROPERTY is_dirty revisions
	help_has qp volume config --help -- rw revisions_to_keep ephemeral
	help_has qp volume resize --help -- SIZE --force
	help_has qp volume revert --help -- REVISION
	help_has qp volume import --help -- --size --no-resize PATH
	help_has qp volume export --help -- PATH
	help_has qp volume clone --help -- --force
	help_has qp volume clear --help -- --force
	help_has qp help pool add -- -o
	help_has qp help volume import -- --no-resize
}

t_aliases() {
	bin=$TEST_TMP/bin.$$
	mkdir -p "$bin"
	ln -s "$QPOOL" "$bin/qvm-pool"
	ln -s "$QPOOL" "$bin/qvm-volume"
	assert_ok qp vm create --class TemplateVM tpl
	assert_ok qp vm create --class AppVM --template tpl app
	for args in '' 'list' 'ls' 'drivers' 'info default' 'info nopool' 'nosuchcommand' \
		'add' '--help' 'add --help'; do
		# shellcheck disable=SC2086 # words without blanks
		qp_run qp pool $args
		a_rc=$QP_RC a_out=$QP_STDOUT
		# shellcheck disable=SC2086
		qp_run "$bin/qvm-pool" $args
		assert_eq "$QP_RC" "$a_rc" "exit status of 'qvm-pool $args'"
		# usage of the file system holding the pool may change meanwhile
		assert_eq "$(printf '%s\n' "$QP_STDOUT" | sed 's/qvm-pool/qpool pool/g; /^usage /d')" \
			"$(printf '%s\n' "$a_out" | sed '/^usage /d')" \
			"output of 'qvm-pool $args'"
	done
	for args in '' 'list' 'list app' 'ls -p default' 'info tpl:root' 'info tpl:private size' \
		'info app:root source' 'i nope:root' 'nosuchcommand' '--help' 'import --help'; do
		# shellcheck disable=SC2086
		qp_run qp volume $args
		a_rc=$QP_RC a_out=$QP_STDOUT
		# shellcheck disable=SC2086
		qp_run "$bin/qvm-volume" $args
		assert_eq "$QP_RC" "$a_rc" "exit status of 'qvm-volume $args'"
		assert_eq "$(printf '%s\n' "$QP_STDOUT" | sed 's/qvm-volume/qpool volume/g')" "$a_out" \
			"output of 'qvm-volume $args'"
	done
	# They change the state too, and honour --root.
	assert_ok "$bin/qvm-pool" add p2 file-reflink -o dir_path="$TEST_TMP/p2",setup_check=False
	assert_match '^p2 +file-reflink$' "$(qp pool list)"
	assert_ok "$bin/qvm-volume" resize tpl:private 3GiB
	assert_eq "$(qp volume info tpl:private size)" $((3072 * MiB)) "size after qvm-volume resize"
	other=$TEST_TMP/other-root.$$
	mkdir -p "$other"
	assert_ok "$bin/qvm-pool" --root "$other" add p3 file-reflink \
		-o dir_path="$TEST_TMP/p3",setup_check=False
	assert_match 'p3' "$(qp --root "$other" pool list)"
	case $(qp pool list) in
	*p3*) _qp_failed "qvm-pool --root changed the wrong state" ;;
	esac
}

t_ext4_needs_setup_check() {
	mnt=$(qp_mkfs_loop ext4 64) || skip
	assert_ok qp vm create --class TemplateVM base
	xml_keep
	fails_with 1 'setup_check=False' qp pool add e4 file-reflink -o dir_path="$mnt/pool"
	case $(qp pool list) in
	*e4*) _qp_failed "refused pool listed" ;;
	esac
	assert_ok qp pool add e4 file-reflink -o dir_path="$mnt/pool",setup_check=False
	assert_match '^e4 +file-reflink$' "$(qp pool list)"
	qp_run qp pool info e4
	assert_eq "$QP_RC" 0 "pool info e4"
	case $QP_STDOUT in
	*setup_check*) _qp_failed "setup_check was saved: $QP_STDOUT" ;;
	esac
	assert_match "dir_path +$mnt/pool" "$QP_STDOUT"
}

t_pool_remove_in_use() {
	assert_ok qp pool add p1 file-reflink -o dir_path="$TEST_TMP/p1.$$",setup_check=False
	assert_ok qp vm create --class TemplateVM -P p1 t
	xml_keep
	fails_with 1 p1 qp pool remove p1
	assert_match '^p1 +file-reflink$' "$(qp pool list)"
	assert_ok qp vm remove t
	assert_ok qp pool remove p1
	case $(qp pool list) in
	*p1*) _qp_failed "p1 still listed after its removal" ;;
	esac
}

# fill DIR: fills the file system of DIR to the last block.
fill() {
	dd if=/dev/zero of="$1/filler" bs=$MiB 2>/dev/null
	sync
	dd if=/dev/zero of="$1/filler2" bs=4096 2>/dev/null
	sync
	# Nothing left for a 1 MiB file.
	if dd if=/dev/zero of="$1/probe" bs=$MiB count=1 conv=fsync 2>/dev/null; then
		_qp_failed "could not fill '$1'"
	fi
	rm -f "$1/probe"
}

t_full_fs() {
	mnt=$(qp_mkfs_loop ext4 64) || skip
	assert_ok qp pool add full file-reflink -o dir_path="$mnt/pool",setup_check=False
	assert_ok qp vm create --class TemplateVM -P full t
	assert_ok qp vm create --class AppVM --template t -P full a
	dd if=/dev/urandom of="$TEST_TMP/priv" bs=$MiB count=6 2>/dev/null
	dd if=/dev/urandom of="$TEST_TMP/root" bs=$MiB count=4 2>/dev/null
	dd if=/dev/urandom of="$TEST_TMP/big" bs=$MiB count=16 2>/dev/null
	assert_ok qp volume import t:private "$TEST_TMP/priv"
	assert_ok qp vm start t
	dev=$(printf '%s\n' "$QP_STDOUT" | awk '$1 == "root" { print $2 }')
	[ -n "$dev" ] || _qp_failed "no root path in: $QP_STDOUT"
	dd if="$TEST_TMP/root" of="$dev" bs=$MiB seek=1 conv=notrunc,fsync 2>/dev/null
	assert_ok qp vm stop t
	want_root=$(dd if="$TEST_TMP/root" bs=$MiB 2>/dev/null | cksum)

	fill "$mnt"
	xml_keep

	# An import that does not fit.
	fails_with 1 '[Ss]pace|ENOSPC|[Ff]ull' qp volume import t:private "$TEST_TMP/big"
	assert_ok qp volume export t:private "$TEST_TMP/out"
	cmp -s "$TEST_TMP/priv" "$TEST_TMP/out" || _qp_failed "private changed by a failed import"
	assert_eq "$(qp volume info t:private size)" $((6 * MiB)) "size after a failed import"
	no_stray "$mnt/pool"

	# An AppVM start needs a copy of the template's root on ext4.
	fails_with 1 '[Ss]pace|ENOSPC|[Ff]ull' qp vm start a
	assert_eq "$(vm_state a)" Halted "state after a failed start"
	no_stray "$mnt/pool"

	# A template start and stop may or may not need room; either way no
	# committed data is lost.
	qp_run qp vm start t
	if [ "$QP_RC" = 0 ]; then
		qp_run qp vm stop t
		[ "$QP_RC" = 0 ] || assert_match '^qpool: ' "$QP_STDERR"
	else
		assert_eq "$QP_RC" 1 "exit status of a failed 'vm start t'"
		assert_match '^qpool: ' "$QP_STDERR"
		assert_eq "$(vm_state t)" Halted "state after a failed start"
	fi
	assert_ok qp volume export t:private "$TEST_TMP/out"
	cmp -s "$TEST_TMP/priv" "$TEST_TMP/out" || _qp_failed "private lost on a full file system"
	qp volume export t:root - 2>/dev/null | head -c $((5 * MiB)) >"$TEST_TMP/head"
	assert_eq "$(dd if="$TEST_TMP/head" bs=$MiB skip=1 2>/dev/null | cksum)" "$want_root" \
		"root on a full file system"

	# With room again everything works.
	rm -f "$mnt/filler" "$mnt/filler2"
	sync
	if [ "$(vm_state t)" = Running ]; then
		assert_ok qp vm stop t
	fi
	assert_ok qp vm start a
	dev=$(printf '%s\n' "$QP_STDOUT" | awk '$1 == "root" { print $2 }')
	assert_eq "$(dd if="$dev" bs=$MiB skip=1 count=4 2>/dev/null | cksum)" "$want_root" \
		"app root after the file system has room again"
	assert_ok qp vm stop a
	assert_ok qp volume import t:private "$TEST_TMP/big"
	assert_ok qp volume export t:private "$TEST_TMP/out"
	cmp -s "$TEST_TMP/big" "$TEST_TMP/out" || _qp_failed "import after freeing space differs"
	no_stray "$mnt/pool"
}

# A start that fails on a later volume leaves no running copy of the earlier
# ones; a running copy resumed from a crash survives such a failure.
t_failed_start() {
	assert_ok qp vm create --class TemplateVM t
	dd if=/dev/urandom of="$TEST_TMP/priv" bs=$MiB count=2 2>/dev/null
	assert_ok qp volume import t:private "$TEST_TMP/priv"
	dir=$(find "$QPOOL_ROOT" -type f -name 'private.img' -path '*/t/*' -exec dirname {} \;)
	[ -d "$dir" ] || _qp_failed "no volume folder of t under $QPOOL_ROOT"
	# An obstacle where the volatile volume goes: its start fails.
	mkdir -p "$dir/volatile-dirty.img/obstacle"
	xml_keep
	qp_run qp vm start t
	assert_eq "$QP_RC" 1 "exit status of a start that fails on volatile"
	assert_match "^qpool: .*volatile" "$QP_STDERR"
	xml_same vm start t
	assert_eq "$(vm_state t)" Halted "state after the failed start"
	assert_not_exists "$dir/root-dirty.img"
	assert_not_exists "$dir/private-dirty.img"
	assert_eq "$(qp volume info t:private is_dirty)" False "private is_dirty after the failed start"
	rmdir "$dir/volatile-dirty.img/obstacle" "$dir/volatile-dirty.img"

	# A run that ends in a crash leaves its data in the running copy.
	assert_ok qp vm start t
	dev=$(printf '%s\n' "$QP_STDOUT" | awk '$1 == "private" { print $2 }')
	[ -n "$dev" ] || _qp_failed "no private path in: $QP_STDOUT"
	printf 'written before the crash' | dd of="$dev" conv=notrunc,fsync 2>/dev/null
	rm -f "$dir/volatile-dirty.img"
	mkdir -p "$dir/volatile-dirty.img/obstacle"
	# Another boot: the failed start keeps the resumed copy.
	QPOOL_BOOT_ID=another-boot qp_run qp vm start t
	assert_eq "$QP_RC" 1 "exit status of the failed start after a crash"
	assert_exists "$dir/private-dirty.img"
	rmdir "$dir/volatile-dirty.img/obstacle" "$dir/volatile-dirty.img"
	QPOOL_BOOT_ID=another-boot assert_ok qp vm start t
	QPOOL_BOOT_ID=another-boot assert_ok qp vm stop t
	assert_ok qp volume export t:private "$TEST_TMP/out"
	assert_eq "$(head -c 24 "$TEST_TMP/out")" "written before the crash" \
		"private after the resumed run"
}

qp_test unknown_objects t_unknown
qp_test invalid_names t_invalid_names
qp_test usage_errors t_usage_errors
qp_test help t_help
qp_test aliases t_aliases
qp_test ext4_needs_setup_check t_ext4_needs_setup_check
qp_test pool_remove_in_use t_pool_remove_in_use
qp_test full_filesystem t_full_fs
qp_test failed_start t_failed_start
qp_done
