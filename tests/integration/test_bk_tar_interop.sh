#!/bin/sh
# Interoperability of backup/bk_tar and backup/bk_compress with GNU tar,
# gzip and zstd, driven through tests/tools/bk_tar_tool.
. "$(dirname "$0")/../lib.sh"

TOOL=${BK_TAR_TOOL:-$QP_TOP/tests/tools/bk_tar_tool}
[ -x "$TOOL" ] || skip "tests/tools/bk_tar_tool is not built (make build-tests)"
tar --version 2>/dev/null | grep -q 'GNU tar' || skip "GNU tar is not installed"

bt() {
	"$TOOL" "$@"
}

# Allocated KiB of a file.
kib() {
	du -k "$1" | cut -f1
}

# A 64 MiB sparse image with data at a few offsets, ending in a hole.
make_image() {
	truncate -s 64M "$1" || return 1
	printf 'first block' | dd of="$1" bs=1 seek=0 conv=notrunc 2>/dev/null
	head -c 300000 /dev/urandom | dd of="$1" bs=4096 seek=2000 conv=notrunc 2>/dev/null
	printf 'middle' | dd of="$1" bs=1 seek=33554431 conv=notrunc 2>/dev/null
	head -c 5000 /dev/urandom | dd of="$1" bs=4096 seek=12000 conv=notrunc 2>/dev/null
}

# Checks that @2 has @1's content and is still sparse.
assert_sparse_copy() {
	cmp "$1" "$2" || _qp_failed "'$2' differs from '$1'"
	[ "$(kib "$2")" -lt 4096 ] || _qp_failed "'$2' is not sparse: $(kib "$2") KiB"
}

t_outer_gnu_tar_lists_and_extracts() {
	d=$TEST_TMP/outer
	mkdir -p "$d/src/vm3" "$d/out"
	printf 'version=4\n' >"$d/src/backup-header"
	printf 'hmac' >"$d/src/backup-header.hmac"
	head -c 123457 /dev/urandom >"$d/src/qubes.xml.000.enc"
	head -c 1048576 /dev/urandom >"$d/src/vm3/private.img.000.enc"
	: >"$d/src/vm3/empty.000.enc"
	long=vm3/$(printf '%0130d' 0).img.000.enc
	printf 'long' >"$d/src/$long"
	set -- backup-header backup-header.hmac qubes.xml.000.enc vm3/private.img.000.enc \
		vm3/empty.000.enc "$long"
	bt outer-write "$d/src" "$@" >"$d/backup" || _qp_failed "outer-write failed"
	assert_ok tar -itf "$d/backup"
	assert_eq "$QP_STDOUT" "$(printf '%s\n' "$@")" "tar -i lists every member"
	# without -i, tar stops after the first archive
	assert_eq "$(tar -tf "$d/backup" 2>/dev/null)" "backup-header" "tar without -i"
	assert_ok tar -ixf "$d/backup" -C "$d/out"
	diff -r "$d/src" "$d/out" >/dev/null || _qp_failed "extracted members differ"
	# the emergency restore's first step
	mkdir "$d/em"
	(cd "$d/em" && tar -i -xf "$d/backup" backup-header backup-header.hmac \
		qubes.xml.000.enc) || _qp_failed "tar -i -x of named members failed"
	cmp "$d/em/qubes.xml.000.enc" "$d/src/qubes.xml.000.enc" || _qp_failed "named extract"
}

t_outer_reads_gnu_tar_output() {
	d=$TEST_TMP/outer2
	mkdir -p "$d/src/vm3" "$d/out"
	printf 'version=4\n' >"$d/src/backup-header"
	head -c 70000 /dev/urandom >"$d/src/vm3/root.img.000.enc"
	long=vm3/$(printf '%0130d' 1).img.000.enc
	printf 'long' >"$d/src/$long"
	for f in backup-header vm3/root.img.000.enc "$long"; do
		tar -cO --posix -C "$d/src" "$f"
	done >"$d/backup"
	assert_ok bt outer-extract "$d/out" <"$d/backup"
	assert_eq "$(printf '%s\n' "$QP_STDOUT" | cut -d' ' -f1)" \
		"$(printf '%s\n' backup-header vm3/root.img.000.enc "$long")" "members"
	diff -r "$d/src" "$d/out" >/dev/null || _qp_failed "extracted members differ"
	# hostile: an absolute name, a '..' name, a symlink
	tar -cO --posix -P "$d/src/backup-header" >"$d/abs" 2>/dev/null
	assert_stderr_matches "absolute" bt outer-list <"$d/abs"
	ln -s backup-header "$d/src/link"
	tar -cO --posix -C "$d/src" link >"$d/link"
	assert_stderr_matches "unsupported member type '2'" bt outer-list <"$d/link"
	tar -cO --posix -C "$d/src" --xform='s,^,../,' backup-header >"$d/dotdot" 2>/dev/null
	assert_stderr_matches "'\.\.'" bt outer-list <"$d/dotdot"
}

inner_via() {
	filter=$1
	prog=$2
	qp_require_cmd "$prog"
	d=$TEST_TMP/inner-$filter
	mkdir -p "$d/x"
	make_image "$d/img" || skip "cannot make a sparse image"
	# small blocks: the stream is many independent members/frames
	bt inner-write -f "$filter" -b 256K "$d/img" vm3/private.img >"$d/stream" ||
		_qp_failed "inner-write failed"
	"$prog" -dc <"$d/stream" >"$d/tar" || _qp_failed "$prog -d failed"
	assert_ok tar -tvf "$d/tar"
	assert_match "67108864 .* vm3/private.img$" "$QP_STDOUT"
	(cd "$d/x" && "$prog" -dc <"$d/stream" | tar -xf -) || _qp_failed "tar -x failed"
	assert_sparse_copy "$d/img" "$d/x/vm3/private.img"
	# and back through our own reader
	assert_ok bt inner-read -f "$filter" 64Mi "$d/back" <"$d/stream"
	assert_eq "$QP_STDOUT" "vm3/private.img 67108864"
	assert_sparse_copy "$d/img" "$d/back"
	assert_stderr_matches "larger than the limit" bt inner-read -f "$filter" 1Mi "$d/no" \
		<"$d/stream"
}

t_inner_sparse_gzip() {
	inner_via gzip gzip
}

t_inner_sparse_zstd() {
	inner_via zstd zstd
}

t_inner_zero_scan() {
	d=$TEST_TMP/zeros
	mkdir -p "$d/x"
	make_image "$d/img" || skip "cannot make a sparse image"
	# written zeros inside a data extent become holes as well
	dd if=/dev/zero of="$d/img" bs=1M seek=40 count=8 conv=notrunc 2>/dev/null
	bt inner-write -z -f gzip "$d/img" vm3/root.img >"$d/stream" || _qp_failed "inner-write"
	(cd "$d/x" && gzip -dc <"$d/stream" | tar -xf -) || _qp_failed "tar -x failed"
	assert_sparse_copy "$d/img" "$d/x/vm3/root.img"
}

t_gnu_sparse_read_by_inner_reader() {
	qp_require_cmd gzip
	d=$TEST_TMP/gnu
	mkdir -p "$d"
	make_image "$d/img" || skip "cannot make a sparse image"
	# many extents: old GNU sparse headers with extension blocks
	i=1
	while [ $i -lt 40 ]; do
		printf 'x%s' $i | dd of="$d/img" bs=4096 seek=$((i * 97 + 5000)) conv=notrunc \
			2>/dev/null
		i=$((i + 1))
	done
	(cd "$d" && tar -Pc --sparse img) | gzip >"$d/gnu.gz"
	gzip -dc <"$d/gnu.gz" | od -An -c -j 156 -N 1 | grep -q S ||
		_qp_failed "GNU tar did not write an old GNU sparse header"
	assert_ok bt inner-read -f gzip 64Mi "$d/back" <"$d/gnu.gz"
	assert_eq "$QP_STDOUT" "img 67108864"
	assert_sparse_copy "$d/img" "$d/back"
	for v in 0.0 0.1 1.0; do
		(cd "$d" && tar -Pc --sparse --format=posix --sparse-version=$v img) >"$d/p.tar"
		rm -f "$d/back"
		assert_ok bt inner-read 64Mi "$d/back" <"$d/p.tar"
		assert_sparse_copy "$d/img" "$d/back"
	done
}

t_qubes_xml_entry() {
	d=$TEST_TMP/xml
	mkdir -p "$d/x"
	printf '<?xml version="1.0"?>\n<qubes/>\n' >"$d/qubes.xml.src"
	bt inner-write-file -f gzip "$d/qubes.xml.src" qubes.xml >"$d/stream" ||
		_qp_failed "inner-write-file failed"
	(cd "$d/x" && gzip -dc <"$d/stream" | tar -xvf -) >"$d/list" || _qp_failed "tar -x"
	assert_eq "$(cat "$d/list")" "qubes.xml"
	cmp "$d/qubes.xml.src" "$d/x/qubes.xml" || _qp_failed "qubes.xml differs"
}

t_block_streams_decompress() {
	qp_require_cmd gzip zstd
	d=$TEST_TMP/blocks
	mkdir -p "$d"
	head -c 3000000 /dev/urandom >"$d/rand"
	seq 1 300000 >>"$d/rand"
	bt compress gzip 100K <"$d/rand" >"$d/rand.gz" || _qp_failed "compress gzip"
	gzip -dc <"$d/rand.gz" | cmp - "$d/rand" || _qp_failed "gzip -d of our members"
	bt compress zstd 100K <"$d/rand" >"$d/rand.zst" || _qp_failed "compress zstd"
	zstd -dcq <"$d/rand.zst" | cmp - "$d/rand" || _qp_failed "zstd -d of our frames"
	# and the other way round, with concatenated streams from the programs
	{ gzip -c <"$d/rand"; gzip -c </dev/null; gzip -1c <"$d/rand"; } >"$d/cat.gz"
	cat "$d/rand" "$d/rand" >"$d/cat.ref"
	bt decompress gzip <"$d/cat.gz" | cmp - "$d/cat.ref" || _qp_failed "our gzip decompression"
	{ zstd -qc <"$d/rand"; zstd -qc <"$d/rand"; } | bt decompress zstd | cmp - "$d/cat.ref" ||
		_qp_failed "our zstd decompression"
	assert_stderr_matches "exceeds the limit" bt decompress gzip 1000000 <"$d/cat.gz"
	head -c 1000 "$d/rand.gz" >"$d/trunc.gz"
	assert_stderr_matches "truncated" bt decompress gzip <"$d/trunc.gz"
}

t_external_filter() {
	qp_require_cmd xz
	d=$TEST_TMP/ext
	mkdir -p "$d"
	seq 1 100000 >"$d/in"
	bt filter xz <"$d/in" >"$d/in.xz" || _qp_failed "filter xz"
	xz -dc <"$d/in.xz" | cmp - "$d/in" || _qp_failed "xz output"
	bt filter xz -d <"$d/in.xz" | cmp - "$d/in" || _qp_failed "filter xz -d"
	assert_stderr_matches "'xz' failed" bt filter xz -d <"$d/in"
}

qp_test outer_gnu_tar_lists_and_extracts t_outer_gnu_tar_lists_and_extracts
qp_test outer_reads_gnu_tar_output t_outer_reads_gnu_tar_output
qp_test inner_sparse_gzip t_inner_sparse_gzip
qp_test inner_sparse_zstd t_inner_sparse_zstd
qp_test inner_zero_scan t_inner_zero_scan
qp_test gnu_sparse_read_by_inner_reader t_gnu_sparse_read_by_inner_reader
qp_test qubes_xml_entry t_qubes_xml_entry
qp_test block_streams_decompress t_block_streams_decompress
qp_test external_filter t_external_filter
qp_done
