#!/bin/sh
# qpool backup / qpool restore: round trips, interoperability with the real
# tools (scrypt, GNU tar, gzip, split) in both directions, the emergency
# restore by hand, and hostile archives (each refused, nothing committed).
# Tests use scrypt's cheap log2(N) = 10 (--kdf-log-n 10) except one.
. "$(dirname "$0")/../lib.sh"

qp_require_root
for c in scrypt tar gzip split cmp od dd; do
	command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || skip "GNU tar is not installed"
scrypt 2>&1 | grep -q -- '-P' || skip "this scrypt has no -P option"

# shellcheck disable=SC2016 # a literal '$' in the passphrase, on purpose
PASS='backup pass!with $ and spaces'
D=$TEST_TMP/d
mkdir -p "$D"
printf '%s\n' "$PASS" >"$D/pass"
printf 'not the passphrase\n' >"$D/wrong"

# Volume images: random data with holes, and text with zeros.
head -c 3000000 /dev/urandom >"$D/root.img"
truncate -s 24M "$D/root.img"
head -c 500000 /dev/urandom | dd of="$D/root.img" bs=4096 seek=4000 conv=notrunc 2>/dev/null
{ head -c 1000000 /dev/zero; seq 1 300000; } >"$D/private.img"
truncate -s 8M "$D/private.img"
head -c 1234567 /dev/urandom >"$D/work.img"
truncate -s 6M "$D/work.img"

# A template, an AppVM and a StandaloneVM with content, in $QPOOL_ROOT.
make_vms() {
	qp vm create --class TemplateVM --label blue tpl &&
		qp vm create --template tpl --label green work &&
		qp vm create --class StandaloneVM --label purple sa &&
		qp volume import tpl:root "$D/root.img" &&
		qp volume import tpl:private "$D/private.img" &&
		qp volume import work:private "$D/work.img" &&
		qp volume import sa:root "$D/private.img"
}

# backup ARGS...: a fast backup with 1 MiB chunks.
backup() {
	qp backup --passphrase-file "$D/pass" --kdf-log-n 10 --chunk-size 1MiB "$@"
}

# Exports VM:VOLUME of the state at $1 to stdout.
vol_of() {
	QPOOL_ROOT=$1 "$QPOOL" volume export "$2" -
}

# check_restored ROOT [SUFFIX]: the VMs at ROOT have the original content,
# classes, templates and labels.
check_restored() {
	assert_ok env QPOOL_ROOT="$1" "$QPOOL" vm list
	assert_match "tpl$2 +TemplateVM" "$QP_STDOUT"
	assert_match "work$2 +AppVM +tpl$2" "$QP_STDOUT"
	vol_of "$1" "tpl$2:root" | cmp - "$D/root.img" || _qp_failed "tpl:root differs"
	vol_of "$1" "tpl$2:private" | cmp - "$D/private.img" || _qp_failed "tpl:private differs"
	vol_of "$1" "work$2:private" | cmp - "$D/work.img" || _qp_failed "work:private differs"
	assert_ok env QPOOL_ROOT="$1" "$QPOOL" volume info "work$2:private" size
	assert_eq "$QP_STDOUT" 6291456 "restored size"
	assert_match 'blue' "$(grep -B2 -A2 "name=\"name\">tpl$2<" "$1/qubes.xml")"
	assert_match 'green' "$(grep -B2 -A2 "name=\"name\">work$2<" "$1/qubes.xml")"
}

# The members of archive $1, in order.
members() {
	tar -itf "$1"
}

# rebuild DIR OUT NAME...: an outer archive of DIR's files NAME..., as Qubes
# writes it (one `tar -cO --posix` per member).
rebuild() {
	_dir=$1
	_out=$2
	shift 2
	: >"$_out"
	for _m in "$@"; do
		tar -cO --posix -C "$_dir" "$_m" >>"$_out" || return 1
	done
}

# flip FILE OFFSET: inverts one byte.
flip() {
	_b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059
	printf "\\$(printf '%03o' $((_b ^ 255)))" | dd of="$1" bs=1 seek="$2" count=1 conv=notrunc 2>/dev/null
}

# Nothing from a backup is in the state at $1 and no staging is left.
assert_nothing_restored() {
	if [ -f "$1/qubes.xml" ]; then
		grep -q 'TemplateVM\|AppVM' "$1/qubes.xml" && _qp_failed "VMs were created in $1"
	fi
	if [ -d "$1/pool-default" ]; then
		_left=$(find "$1/pool-default" -type f | head -n 3)
		[ -z "$_left" ] || _qp_failed "files left in the pool: $_left"
	fi
}

# A backup made once, shared by the tests below.
SRC=$TEST_TMP/src
ARCH=$TEST_TMP/archive
mkdir -p "$SRC"
QPOOL_ROOT=$SRC make_vms >/dev/null || skip "cannot create the VMs to back up"
QPOOL_ROOT=$SRC backup --exclude sa "$ARCH" >/dev/null || skip "qpool backup failed"

t_members_in_order() {
	members "$ARCH" >"$D/list"
	assert_eq "$(sed -n 1p "$D/list")" backup-header
	assert_eq "$(sed -n 2p "$D/list")" backup-header.hmac
	assert_eq "$(sed -n 3p "$D/list")" qubes.xml.000.enc
	assert_match '^vm1/root\.img\.000\.enc$' "$(sed -n 4p "$D/list")"
	grep -q '^vm1/root.img.002.enc$' "$D/list" || _qp_failed "vm1/root.img has too few chunks"
	grep -q '^vm2/private.img.000.enc$' "$D/list" || _qp_failed "no vm2/private.img"
	grep -q '^vm3/' "$D/list" && _qp_failed "the excluded VM is in the archive"
	return 0
}

t_scrypt_decrypts_every_member() {
	x=$TEST_TMP/x1
	mkdir -p "$x"
	(cd "$x" && tar -i -xf "$ARCH") || _qp_failed "GNU tar cannot extract the archive"
	id=$(sed -n 's/^backup-id=//p' "$x/backup-header")
	assert_match '^[0-9]{8}T[0-9]{6}-[0-9]+$' "$id"
	printf '%s\n' "backup-header!$PASS" | scrypt dec -P "$x/backup-header.hmac" "$x/hv" ||
		_qp_failed "scrypt cannot decrypt backup-header.hmac"
	cmp "$x/hv" "$x/backup-header" || _qp_failed "backup-header.hmac differs"
	n=0
	for f in $(members "$ARCH" | grep '\.enc$'); do
		printf '%s\n' "$id!${f%.enc}!$PASS" | scrypt dec -P "$x/$f" "$x/dec" ||
			_qp_failed "scrypt dec refuses $f"
		n=$((n + 1))
	done
	[ "$n" -ge 5 ] || _qp_failed "only $n members"
}

# Reference C.8, step by step, with GNU tar, scrypt and gzip only.
t_emergency_restore_by_hand() {
	x=$TEST_TMP/x2
	mkdir -p "$x"
	cd "$x" || return 1
	tar -i -xf "$ARCH" backup-header backup-header.hmac qubes.xml.000.enc || return 1
	printf '%s\n' "backup-header!$PASS" | scrypt dec -P backup-header.hmac backup-header.verified &&
		diff -qs backup-header backup-header.verified >/dev/null || _qp_failed "header check"
	backup_id=$(sed -n 's/^backup-id=//p' backup-header)
	printf '%s\n' "$backup_id!qubes.xml.000!$PASS" | scrypt dec -P qubes.xml.000.enc | gzip -d |
		tar -x || _qp_failed "qubes.xml"
	grep -q '<feature name="backup-path">vm1/</feature>' qubes.xml || _qp_failed "no backup-path"
	grep -q '<feature name="backup-size">' qubes.xml || _qp_failed "no backup-size"
	grep -q 'class="AdminVM"' qubes.xml || _qp_failed "no dom0 in qubes.xml"
	tar -i -xf "$ARCH" vm1/ vm2/ || return 1
	for v in vm1/root vm1/private vm2/private; do
		find "${v%/*}/" -name "${v#*/}.img.*.enc" | sort -V | while read -r f_enc; do
			f_dec=${f_enc%.enc}
			printf '%s\n' "$backup_id!$f_dec!$PASS" | scrypt dec -P "$f_enc" || break
		done | gzip -d | tar -x || _qp_failed "cannot extract $v"
	done
	cmp vm1/root.img "$D/root.img" || _qp_failed "vm1/root.img differs"
	cmp vm1/private.img "$D/private.img" || _qp_failed "vm1/private.img differs"
	cmp vm2/private.img "$D/work.img" || _qp_failed "vm2/private.img differs"
}

t_round_trip() {
	dst=$TEST_TMP/rt
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" "$ARCH"
	assert_match 'restored 2 VMs' "$QP_STDOUT"
	check_restored "$dst" ""
	# again: conflicts
	assert_stderr_matches "VM 'tpl' already exists" env QPOOL_ROOT="$dst" "$QPOOL" restore \
		--passphrase-file "$D/pass" "$ARCH"
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" \
		--rename-conflicting "$ARCH"
	check_restored "$dst" 1
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" \
		--skip-conflicting "$ARCH"
	assert_match 'restored 0 VMs' "$QP_STDOUT"
}

t_restore_one_vm_to_pool() {
	dst=$TEST_TMP/one
	mnt=$(qp_mkfs_loop btrfs 300) || skip
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" pool add fast file-reflink -o dir_path="$mnt/p"
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" --pool fast "$ARCH" tpl
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" vm list
	assert_match 'tpl +TemplateVM' "$QP_STDOUT"
	printf '%s\n' "$QP_STDOUT" | grep -q work && _qp_failed "work was restored too"
	[ -n "$(find "$mnt/p" -name 'root.img')" ] || _qp_failed "not in pool fast"
	vol_of "$dst" tpl:root | cmp - "$D/root.img" || _qp_failed "tpl:root differs"
	# an AppVM whose template is neither in the restore nor on the host
	dst2=$TEST_TMP/one2
	assert_stderr_matches "skipping 'work': its template 'tpl'" env QPOOL_ROOT="$dst2" \
		"$QPOOL" restore --passphrase-file "$D/pass" "$ARCH" work
}

t_verify_only_changes_nothing() {
	dst=$TEST_TMP/vo
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" --verify-only "$ARCH"
	assert_match 'verified 2 VMs' "$QP_STDOUT"
	assert_not_exists "$dst"
}

t_wrong_passphrase_creates_nothing() {
	dst=$TEST_TMP/wp
	assert_stderr_matches '^qpool: wrong passphrase$' env QPOOL_ROOT="$dst" "$QPOOL" restore \
		--passphrase-file "$D/wrong" "$ARCH"
	assert_eq "$QP_RC" 1
	assert_nothing_restored "$dst"
}

# A backup built the way Qubes builds one: GNU tar --sparse, gzip, split,
# scrypt enc per chunk, a Qubes 4 qubes.xml, one tar --posix per member.
# qubes_made FILTER PROGRAM: $q/backup, a backup built the way Qubes writes
# one, whose header names FILTER and whose streams PROGRAM compressed.
qubes_made() {
	q=$TEST_TMP/q-$1-$2
	mkdir -p "$q/in/t" "$q/in/a" "$q/out/vm2" "$q/out/vm5"
	id=20230405T123455-1234
	printf 'version=4\nencrypted=True\ncompressed=True\ncompression-filter=%s\nhmac-algorithm=scrypt\nbackup-id=%s\n' \
		"$1" "$id" >"$q/out/backup-header"
	# scrypt enc -P reads the passphrase from stdin, so the data comes from files
	printf '%s\n' "backup-header!$PASS" |
		scrypt enc -P --logN 10 -r 8 -p 1 "$q/out/backup-header" "$q/out/backup-header.hmac" ||
		return 1
	cat >"$q/in/qubes.xml" <<EOF
<?xml version='1.0' encoding='UTF-8'?>
<qubes>
  <labels><label id="label-1" color="0xcc0000">red</label><label id="label-4" color="0x73d216">green</label><label id="label-8" color="0x000000">black</label></labels>
  <pools><pool name="vm-pool" volume_group="qubes_dom0" thin_pool="vm-pool" driver="lvm_thin" revisions_to_keep="1" ephemeral_volatile="False"/></pools>
  <properties><property name="default_pool">vm-pool</property><property name="default_template">debian-12</property></properties>
  <domains>
    <domain id="domain-0" class="AdminVM"><properties><property name="label">black</property></properties><features><feature name="backup-content"></feature></features><tags/></domain>
    <domain id="domain-2" class="TemplateVM"><properties><property name="label">black</property><property name="name">debian-12</property><property name="qid">2</property><property name="uuid">6a3f1c0e-2b7d-4c55-9a1e-0f3b5d7e9a12</property></properties>
      <features><feature name="backup-content">1</feature><feature name="backup-path">vm2/</feature><feature name="backup-size">33554432</feature></features><tags/>
      <volume-config>
        <volume name="root" pool="vm-pool" vid="qubes_dom0/vm-debian-12-root" revisions_to_keep="1" rw="True" save_on_stop="True" snap_on_start="False" size="25165824"/>
        <volume name="private" pool="vm-pool" vid="qubes_dom0/vm-debian-12-private" revisions_to_keep="1" rw="True" save_on_stop="True" snap_on_start="False" size="8388608"/>
        <volume name="volatile" pool="vm-pool" vid="qubes_dom0/vm-debian-12-volatile" revisions_to_keep="0" rw="True" save_on_stop="False" snap_on_start="False" size="10737418240"/>
      </volume-config></domain>
    <domain id="domain-5" class="AppVM"><properties><property name="label">green</property><property name="name">mail</property><property name="qid">5</property><property name="template">debian-12</property><property name="uuid">0d9c6a2e-7f41-4b8a-8e3c-5a1b2c3d4e5f</property></properties>
      <features><feature name="backup-content">1</feature><feature name="backup-path">vm5/</feature><feature name="backup-size">6291456</feature></features><tags/>
      <volume-config>
        <volume name="root" pool="vm-pool" vid="qubes_dom0/vm-mail-root" revisions_to_keep="0" rw="True" save_on_stop="False" snap_on_start="True" size="25165824" source="qubes_dom0/vm-debian-12-root"/>
        <volume name="private" pool="vm-pool" vid="qubes_dom0/vm-mail-private" revisions_to_keep="1" rw="True" save_on_stop="True" snap_on_start="False" size="6291456"/>
      </volume-config></domain>
  </domains>
</qubes>
EOF
	cp "$D/root.img" "$q/in/t/root.img"
	cp "$D/private.img" "$q/in/t/private.img"
	cp "$D/work.img" "$q/in/a/private.img"
	_z=$2
	# archive_file DIR BASE SUBDIR: tar --sparse | gzip | split | scrypt enc
	archive_file() {
		mkdir -p "$q/out/$3"
		tar -Pc --sparse -C "$1" --dereference --xform="s:^$2:$3\\0:" "$2" 2>/dev/null |
			"$_z" | split -a 3 -d -b 1M - "$q/chunk." || return 1
		for c in "$q"/chunk.*; do
			n=${c##*.}
			printf '%s\n' "$id!$3$2.$n!$PASS" |
				scrypt enc -P --logN 10 -r 8 -p 1 "$c" "$q/out/$3$2.$n.enc" || return 1
			rm -f "$c"
		done
	}
	(cd "$q/in" && tar -c qubes.xml | "$_z" | split -a 3 -d -b 1M - "$q/chunk.") || return 1
	printf '%s\n' "$id!qubes.xml.000!$PASS" |
		scrypt enc -P --logN 10 -r 8 -p 1 "$q/chunk.000" "$q/out/qubes.xml.000.enc" || return 1
	rm -f "$q"/chunk.*
	archive_file "$q/in/t" root.img vm2/ || return 1
	archive_file "$q/in/t" private.img vm2/ || return 1
	archive_file "$q/in/a" private.img vm5/ || return 1
	set -- backup-header backup-header.hmac qubes.xml.000.enc
	for f in $(cd "$q/out" && find vm2 vm5 -name '*.enc' | sort -V); do
		set -- "$@" "$f"
	done
	rebuild "$q/out" "$q/backup" "$@" || return 1
}

t_qubes_made_backup_restores() {
	qubes_made gzip gzip || return 1
	dst=$TEST_TMP/qr
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" --verify-only "$q/backup"
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" "$q/backup"
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" vm list
	assert_match 'debian-12 +TemplateVM' "$QP_STDOUT"
	assert_match 'mail +AppVM +debian-12' "$QP_STDOUT"
	vol_of "$dst" debian-12:root | cmp - "$D/root.img" || _qp_failed "debian-12:root differs"
	vol_of "$dst" debian-12:private | cmp - "$D/private.img" || _qp_failed "private differs"
	vol_of "$dst" mail:private | cmp - "$D/work.img" || _qp_failed "mail:private differs"
	assert_match 'green' "$(grep -B2 -A2 'name="name">mail<' "$dst/qubes.xml")"
	cp "$q/backup" "$TEST_TMP/qubes-made"
}

# ---- hostile archives --------------------------------------------------------

# refused ARCHIVE ERE: restore and verify fail with a message matching ERE
# and nothing is created.
refused() {
	dst=$TEST_TMP/h.$$.$(od -An -tu4 -N4 /dev/urandom | tr -d ' ')
	assert_stderr_matches "$2" env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" "$1"
	[ "$QP_RC" = 1 ] || _qp_failed "restore of $1 exited $QP_RC"
	assert_nothing_restored "$dst"
	assert_fails env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" --verify-only "$1"
}

t_corrupt_byte_in_every_member() {
	# block numbers of the member headers: data starts one block later
	tar -itvR -f "$ARCH" | sed -n 's/^block \([0-9]*\): -.* \([^ ]*\)$/\1 \2/p' >"$D/blocks"
	tar -itv -f "$ARCH" | awk '{ print $3 }' >"$D/sizes"
	i=0
	paste -d' ' "$D/blocks" "$D/sizes" | while read -r blk name size; do
		i=$((i + 1))
		case $name in */PaxHeaders/* | PaxHeaders*) continue ;; esac
		cp "$ARCH" "$D/bad"
		flip "$D/bad" $(((blk + 1) * 512 + size / 2))
		refused "$D/bad" 'qpool: .*(authentication failed|does not match|does not belong)'
	done
	# the ustar header of vm1/root.img.000.enc
	cp "$ARCH" "$D/bad"
	flip "$D/bad" $((62 * 512 + 10))
	refused "$D/bad" 'qpool: '
}

t_truncated_archive() {
	size=$(wc -c <"$ARCH")
	for cut in $((size / 2)) $((size - 10240)) 5000; do
		head -c "$cut" "$ARCH" >"$D/trunc"
		refused "$D/trunc" 'qpool: '
	done
}

t_swapped_and_moved_chunks() {
	x=$TEST_TMP/x3
	mkdir -p "$x"
	(cd "$x" && tar -i -xf "$ARCH") || return 1
	members "$ARCH" >"$D/list"
	# swap the content of two chunks
	cp "$x/vm1/root.img.000.enc" "$D/c0"
	cp "$x/vm1/root.img.001.enc" "$x/vm1/root.img.000.enc"
	cp "$D/c0" "$x/vm1/root.img.001.enc"
	# shellcheck disable=SC2046
	rebuild "$x" "$D/swapped" $(cat "$D/list") || return 1
	refused "$D/swapped" "'vm1/root.img.000.enc' does not belong"
	cp "$D/c0" "$x/vm1/root.img.000.enc"
	cp "$x/vm1/root.img.000.enc" "$D/c0"
	(cd "$x" && tar -i -xf "$ARCH" vm1/root.img.001.enc) || return 1
	# a chunk of another VM under vm2's path
	cp "$x/vm2/private.img.000.enc" "$D/c2"
	cp "$x/vm1/private.img.000.enc" "$x/vm2/private.img.000.enc"
	# shellcheck disable=SC2046
	rebuild "$x" "$D/moved" $(cat "$D/list") || return 1
	refused "$D/moved" "'vm2/private.img.000.enc' does not belong"
	cp "$D/c2" "$x/vm2/private.img.000.enc"
	# chunks out of order
	# shellcheck disable=SC2046
	rebuild "$x" "$D/order" $(sed '/^vm1\/root.img.001.enc$/d' "$D/list" |
		sed 's/^vm1\/root.img.002.enc$/vm1\/root.img.002.enc\nvm1\/root.img.001.enc/') || return 1
	refused "$D/order" 'comes where chunk 001'
	# a chunk missing at the end of a file
	last=$(grep '^vm1/root.img' "$D/list" | tail -n 1)
	# shellcheck disable=SC2046
	rebuild "$x" "$D/short" $(grep -vx "$last" "$D/list") || return 1
	refused "$D/short" 'qpool: '
	# a whole volume missing: restore refuses, verify reports it
	# shellcheck disable=SC2046
	rebuild "$x" "$D/novm2" $(grep -v '^vm2/' "$D/list") || return 1
	refused "$D/novm2" 'lacks 1 file'
	assert_stderr_matches "'vm2/private.img' is missing" "$QPOOL" restore --passphrase-file \
		"$D/pass" --verify-only "$D/novm2"
	# an unexpected member
	printf 'hello' >"$x/evil.txt"
	# shellcheck disable=SC2046
	rebuild "$x" "$D/evil" $(cat "$D/list") evil.txt || return 1
	refused "$D/evil" "unexpected member 'evil.txt'"
}

# Once with the real default key derivation (N = 2^20), checked by scrypt.
t_default_kdf() {
	src=$TEST_TMP/kd
	mkdir -p "$src"
	QPOOL_ROOT=$src "$QPOOL" vm create --class StandaloneVM small >/dev/null || return 1
	head -c 100000 /dev/urandom >"$D/small.img"
	QPOOL_ROOT=$src "$QPOOL" volume import small:private "$D/small.img" >/dev/null || return 1
	assert_ok env QPOOL_ROOT="$src" "$QPOOL" backup --passphrase-file "$D/pass" \
		"$TEST_TMP/kd.bak" small
	x=$TEST_TMP/x4
	mkdir -p "$x"
	(cd "$x" && tar -i -xf "$TEST_TMP/kd.bak" backup-header.hmac) || return 1
	assert_eq "$(od -An -tu1 -j7 -N1 "$x/backup-header.hmac" | tr -d ' ')" 20 "log2(N)"
	printf '%s\n' "backup-header!$PASS" | scrypt dec -P "$x/backup-header.hmac" "$x/h" ||
		_qp_failed "scrypt dec refuses the default parameters"
	assert_ok env QPOOL_ROOT="$TEST_TMP/kd2" "$QPOOL" restore --passphrase-file "$D/pass" \
		"$TEST_TMP/kd.bak"
	vol_of "$TEST_TMP/kd2" small:private | head -c 100000 | cmp - "$D/small.img" ||
		_qp_failed "small:private differs"
}

# A stream a little over the chunk size is one chunk, not a second tiny
# one (each costs a key derivation); a longer one is cut at the chunk size.
t_chunks_stretch() {
	src=$TEST_TMP/stretch
	head -c $((1024 * 1024)) /dev/urandom >"$D/one.img"
	head -c $((1536 * 1024)) /dev/urandom >"$D/onehalf.img"
	QPOOL_ROOT=$src qp vm create --class StandaloneVM sv || _qp_failed "cannot create sv"
	QPOOL_ROOT=$src qp volume import sv:root "$D/one.img" || _qp_failed "import root"
	QPOOL_ROOT=$src qp volume import sv:private "$D/onehalf.img" || _qp_failed "import private"
	assert_ok env QPOOL_ROOT="$src" "$QPOOL" backup --passphrase-file "$D/pass" \
		--kdf-log-n 10 --chunk-size 1MiB --no-compress "$TEST_TMP/stretch.bak" sv
	members "$TEST_TMP/stretch.bak" | grep '^vm1/' >"$D/stretch.list"
	assert_eq "$(grep -c 'root' "$D/stretch.list")" 1 "chunks of a 1 MiB volume"
	assert_eq "$(grep -c 'private' "$D/stretch.list")" 2 "chunks of a 1.5 MiB volume"
	tar -itvf "$TEST_TMP/stretch.bak" | awk '/private.img.000/ { print $3 }' >"$D/sizes"
	assert_eq "$(cat "$D/sizes")" $((1024 * 1024 + 128)) "first chunk of the 1.5 MiB volume"
	tar -itvf "$TEST_TMP/stretch.bak" | awk '/root.img.000/ { print $3 }' >"$D/size1"
	[ "$(cat "$D/size1")" -gt $((1024 * 1024 + 128)) ] || _qp_failed "root chunk is not stretched"
	assert_ok env QPOOL_ROOT="$TEST_TMP/stretch2" "$QPOOL" restore --passphrase-file "$D/pass" \
		"$TEST_TMP/stretch.bak"
	vol_of "$TEST_TMP/stretch2" sv:root | cmp -n $((1024 * 1024)) - "$D/one.img" ||
		_qp_failed "sv:root differs"
	vol_of "$TEST_TMP/stretch2" sv:private | cmp -n $((1536 * 1024)) - "$D/onehalf.img" ||
		_qp_failed "sv:private differs"
}

# bzip2 and xz: run as programs, both ways.
# While someone holds the archive open for writing, restore takes no read
# lease and decrypts every chunk into a temporary file instead of reading
# the archive twice: the same volumes, the same refusals.
t_temporary_files() {
	exec 3>>"$ARCH"
	dst=$TEST_TMP/tmpf
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" "$ARCH"
	check_restored "$dst" ""
	bad=$TEST_TMP/tmpf-bad
	cp "$ARCH" "$bad"
	exec 4>>"$bad"
	off=$(grep -abo 'vm1/private.img.000.enc' "$bad" | head -n 1 | cut -d: -f1)
	flip "$bad" $((off + 512 + 300))
	dst=$TEST_TMP/tmpf2
	assert_stderr_matches "authentication failed" env QPOOL_ROOT="$dst" "$QPOOL" restore \
		--passphrase-file "$D/pass" "$bad"
	assert_nothing_restored "$dst"
	exec 3>&- 4>&-
}

# Opening the archive for writing while it is restored breaks the lease:
# the restore stops and commits nothing.
t_lease_broken() {
	src=$TEST_TMP/lsrc
	big=$TEST_TMP/big.img
	head -c 40M /dev/urandom >"$big"
	QPOOL_ROOT=$src qp vm create --class StandaloneVM --label red big >/dev/null &&
		QPOOL_ROOT=$src qp volume import big:root "$big" >/dev/null || return 1
	# 40 chunks, a key derivation each (64 MiB of scrypt): a few seconds.
	QPOOL_ROOT=$src qp backup --passphrase-file "$D/pass" --kdf-log-n 16 --chunk-size 1MiB \
		"$TEST_TMP/big.bak" >/dev/null || return 1
	dst=$TEST_TMP/lease
	QPOOL_ROOT=$dst "$QPOOL" restore --passphrase-file "$D/pass" "$TEST_TMP/big.bak" \
		>/dev/null 2>"$TEST_TMP/lease.err" &
	pid=$!
	sleep 1
	# A writer that does not wait: its open fails, the lease breaks.
	python3 -c 'import os, sys
try:
    os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
except BlockingIOError:
    pass' "$TEST_TMP/big.bak"
	wait "$pid"
	assert_eq "$?" 1 "exit status of a restore whose lease broke"
	assert_match "opened for writing during the restore" "$(cat "$TEST_TMP/lease.err")"
	assert_eq "$(wc -l <"$TEST_TMP/lease.err")" 1 "lines of error"
	if [ -f "$dst/qubes.xml" ]; then
		grep -q 'name="name">big<' "$dst/qubes.xml" && _qp_failed "VM 'big' was created"
	fi
	[ -z "$(find "$dst" -name '*.img' -size +0 2>/dev/null | head -n 1)" ] ||
		_qp_failed "images left behind"
}

t_external_filters() {
	for z in bzip2 xz; do
		QPOOL_ROOT=$SRC backup -Z "$z" --exclude sa "$TEST_TMP/arch-$z" >/dev/null ||
			_qp_failed "backup with -Z $z"
		dst=$TEST_TMP/rt-$z
		assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" \
			"$TEST_TMP/arch-$z"
		check_restored "$dst" ""
		# By hand: scrypt, the program, tar.
		x=$TEST_TMP/x-$z
		mkdir -p "$x"
		(cd "$x" && tar -i -xf "$TEST_TMP/arch-$z") || _qp_failed "tar -x"
		grep -qx "compression-filter=$z" "$x/backup-header" || _qp_failed "header of -Z $z"
		id=$(sed -n 's/^backup-id=//p' "$x/backup-header")
		find "$x/vm1" -name 'root.img.*.enc' | sort -V | while read -r f; do
			f_dec=${f#"$x/"}
			printf '%s\n' "$id!${f_dec%.enc}!$PASS" | scrypt dec -P "$f" || break
		done | "$z" -d | tar -x -C "$x" || _qp_failed "cannot extract vm1/root.img ($z)"
		cmp "$x/vm1/root.img" "$D/root.img" || _qp_failed "vm1/root.img differs ($z)"
	done
	# A backup built the Qubes way with bzip2.
	qubes_made bzip2 bzip2 || return 1
	dst=$TEST_TMP/qr-bzip2
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" "$q/backup"
	vol_of "$dst" debian-12:root | cmp - "$D/root.img" || _qp_failed "debian-12:root differs"
	vol_of "$dst" mail:private | cmp - "$D/work.img" || _qp_failed "mail:private differs"
	# A header that says bzip2 over gzip data: refused, nothing restored.
	qubes_made bzip2 gzip || return 1
	dst=$TEST_TMP/qr-bad
	assert_stderr_matches "bzip2.*cannot decompress|cannot decompress" \
		env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$D/pass" "$q/backup"
	assert_nothing_restored "$dst"
	# Unknown filters, and a program that is not there.
	assert_stderr_matches "unknown compression filter 'lz9'" \
		env QPOOL_ROOT="$SRC" "$QPOOL" backup --passphrase-file "$D/pass" -Z lz9 "$TEST_TMP/no"
	assert_eq "$QP_RC" 2 "exit status of an unknown filter"
	assert_stderr_matches "needs the program 'xz', which is not installed" \
		env PATH=/nonexistent QPOOL_ROOT="$SRC" "$QPOOL" backup --passphrase-file "$D/pass" \
		-Z xz "$TEST_TMP/no"
	assert_not_exists "$TEST_TMP/no"
	# A program that fails: its last line of stderr, and no archive.
	mkdir -p "$TEST_TMP/badbin"
	printf '#!/bin/sh\necho "xz: cannot allocate memory" >&2\nexit 1\n' >"$TEST_TMP/badbin/xz"
	chmod +x "$TEST_TMP/badbin/xz"
	assert_stderr_matches "'xz' failed with status 1: xz: cannot allocate memory" \
		env PATH="$TEST_TMP/badbin:$PATH" QPOOL_ROOT="$SRC" "$QPOOL" backup \
		--passphrase-file "$D/pass" --kdf-log-n 10 -Z xz "$TEST_TMP/no"
	assert_eq "$(printf "%s\n" "$QP_STDERR" | wc -l)" 1 "lines of error when xz fails"
	assert_not_exists "$TEST_TMP/no"
}

t_cli_errors() {
	assert_stderr_matches 'missing DEST' qp backup --passphrase-file "$D/pass"
	assert_eq "$QP_RC" 2
	assert_stderr_matches "VM 'nothere' does not exist" env QPOOL_ROOT="$SRC" "$QPOOL" backup \
		--passphrase-file "$D/pass" "$TEST_TMP/x.bak" nothere
	assert_not_exists "$TEST_TMP/x.bak"
	assert_stderr_matches "no terminal|passphrase" env QPOOL_ROOT="$SRC" setsid "$QPOOL" backup \
		"$TEST_TMP/y.bak" </dev/null
	assert_not_exists "$TEST_TMP/y.bak"
	# a folder as DEST, and the qvm-backup name
	mkdir -p "$TEST_TMP/dir"
	ln -sf "$QPOOL" "$TEST_TMP/qvm-backup"
	assert_ok env QPOOL_ROOT="$SRC" "$TEST_TMP/qvm-backup" --passphrase-file "$D/pass" \
		--kdf-log-n 10 -Z zstd "$TEST_TMP/dir" work
	f=$(find "$TEST_TMP/dir" -name 'qubes-*T*')
	[ -n "$f" ] || _qp_failed "no qubes-YYYY-MM-DDTHHMMSS file"
	assert_ok env QPOOL_ROOT="$TEST_TMP/z" "$QPOOL" restore --passphrase-file "$D/pass" \
		--verify-only "$f" work
}

qp_test members_in_order t_members_in_order
qp_test scrypt_decrypts_every_member t_scrypt_decrypts_every_member
qp_test emergency_restore_by_hand t_emergency_restore_by_hand
qp_test round_trip t_round_trip
qp_test restore_one_vm_to_pool t_restore_one_vm_to_pool
qp_test verify_only_changes_nothing t_verify_only_changes_nothing
qp_test wrong_passphrase_creates_nothing t_wrong_passphrase_creates_nothing
qp_test qubes_made_backup_restores t_qubes_made_backup_restores
qp_test corrupt_byte_in_every_member t_corrupt_byte_in_every_member
qp_test truncated_archive t_truncated_archive
qp_test swapped_and_moved_chunks t_swapped_and_moved_chunks
qp_test default_kdf t_default_kdf
qp_test chunks_stretch t_chunks_stretch
qp_test temporary_files t_temporary_files
qp_test lease_broken t_lease_broken
qp_test external_filters t_external_filters
qp_test cli_errors t_cli_errors
qp_done
