#!/bin/sh
# Interoperability of qpool's scrypt containers with the scrypt tool:
# what qpool writes, `scrypt dec` reads, and what `scrypt enc` writes, qpool
# reads, byte for byte; wrong passphrases, flipped bytes and truncation fail
# on both sides.  Drives tests/tools/bk_scrypt_tool (built by `make check`).
# Passphrases reach scrypt on stdin (-P) and the tool through a file.
. "$(dirname "$0")/../lib.sh"

TOOL=$QP_TOP/tests/tools/bk_scrypt_tool
[ -x "$TOOL" ] || skip "tests/tools/bk_scrypt_tool is not built (make build-tests)"
command -v scrypt >/dev/null 2>&1 || skip "the scrypt tool is not installed"
command -v cmp >/dev/null 2>&1 || skip "cmp is not installed"
# -P (passphrase on stdin) appeared in scrypt 1.2.1
scrypt 2>&1 | grep -q -- '-P' || skip "this scrypt has no -P option"

# shellcheck disable=SC2016 # a literal '$' in the passphrase, on purpose
PASS='correct horse!battery $staple'
D=$TEST_TMP/data
mkdir -p "$D"
printf '%s\n' "$PASS" >"$D/pass"
printf '%s' "$PASS" >"$D/pass-nonl"
printf '%s\n' "wrong $PASS" >"$D/wrong"

# make_file NAME BYTES: random content.
make_file() {
	head -c "$2" /dev/urandom >"$D/$1"
}

# flip FILE OFFSET: inverts one byte in place.
flip() {
	_b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059 # the format is an octal escape we build
	printf "\\$(printf '%03o' $((_b ^ 255)))" |
		dd of="$1" bs=1 seek="$2" count=1 conv=notrunc 2>/dev/null
}

scrypt_dec() {
	printf '%s\n' "$1" | scrypt dec -P "$2" "$3"
}

scrypt_enc() {
	printf '%s\n' "$1" | scrypt enc -P --logN 10 -r 8 -p 1 "$2" "$3"
}

t_qpool_to_scrypt() {
	for n in 0 1 16 100000 1048583; do
		make_file "p$n" "$n"
		assert_ok "$TOOL" enc -n 10 "$D/pass" "$D/p$n" "$D/p$n.enc"
		assert_eq "$(wc -c <"$D/p$n.enc" | tr -d ' ')" $((n + 128)) "container size"
		assert_ok scrypt_dec "$PASS" "$D/p$n.enc" "$D/p$n.out"
		assert_ok cmp "$D/p$n" "$D/p$n.out"
	done
}

t_scrypt_to_qpool() {
	for n in 0 1 4097 1048583; do
		make_file "s$n" "$n"
		assert_ok scrypt_enc "$PASS" "$D/s$n" "$D/s$n.enc"
		assert_ok "$TOOL" dec "$D/pass" "$D/s$n.enc" "$D/s$n.out"
		assert_ok cmp "$D/s$n" "$D/s$n.out"
	done
	# the passphrase file's final newline is optional
	assert_ok "$TOOL" dec "$D/pass-nonl" "$D/s1.enc" "$D/s1.out2"
	assert_ok cmp "$D/s1" "$D/s1.out2"
}

t_pipes() {
	make_file pipe 300000
	"$TOOL" enc -n 10 "$D/pass" - - <"$D/pipe" >"$D/pipe.enc" || _qp_failed "enc to stdout"
	"$TOOL" dec "$D/pass" - - <"$D/pipe.enc" >"$D/pipe.out" || _qp_failed "dec from stdin"
	assert_ok cmp "$D/pipe" "$D/pipe.out"
}

# What `scrypt enc` picks by default on this machine: qpool's default
# limits accept it, and scrypt reads qpool's defaults (log_n 20, r 8, p 1).
t_default_params() {
	make_file def 65536
	printf '%s\n' "$PASS" | scrypt enc -P -v "$D/def" "$D/def.scrypt" 2>"$D/def.v" ||
		_qp_failed "scrypt enc failed"
	sed 's/^/# scrypt enc -v: /' "$D/def.v"
	assert_ok "$TOOL" dec "$D/pass" "$D/def.scrypt" "$D/def.out1"
	assert_ok cmp "$D/def" "$D/def.out1"
	assert_ok "$TOOL" enc "$D/pass" "$D/def" "$D/def.qpool"
	assert_ok scrypt info "$D/def.qpool"
	assert_match 'N = 1048576; r = 8; p = 1' "$QP_STDOUT $QP_STDERR"
	assert_ok scrypt_dec "$PASS" "$D/def.qpool" "$D/def.out2"
	assert_ok cmp "$D/def" "$D/def.out2"
}

t_wrong_passphrase() {
	make_file w 1000
	assert_ok scrypt_enc "$PASS" "$D/w" "$D/w.scrypt"
	assert_stderr_matches 'wrong passphrase' "$TOOL" dec "$D/wrong" "$D/w.scrypt" "$D/w.out"
	assert_eq "$QP_RC" 3 "exit status for a wrong passphrase"
	assert_not_exists "$D/w.out"
	assert_ok "$TOOL" enc -n 10 "$D/pass" "$D/w" "$D/w.qpool"
	assert_fails scrypt_dec "wrong $PASS" "$D/w.qpool" "$D/w.out"
}

t_corruption() {
	make_file c 5000
	assert_ok "$TOOL" enc -n 10 "$D/pass" "$D/c" "$D/c.enc"
	size=$(wc -c <"$D/c.enc" | tr -d ' ')
	# header magic, parameters, salt, checksum, header hmac, data, trailer
	for off in 0 7 20 50 70 96 2000 $((size - 33)) $((size - 32)) $((size - 1)); do
		cp "$D/c.enc" "$D/bad.enc"
		flip "$D/bad.enc" "$off"
		assert_fails "$TOOL" dec "$D/pass" "$D/bad.enc" "$D/bad.out"
		assert_not_exists "$D/bad.out"
		assert_fails scrypt_dec "$PASS" "$D/bad.enc" "$D/bad.out2"
	done
	cp "$D/c.enc" "$D/bad.enc"
	flip "$D/bad.enc" 3000
	assert_stderr_matches 'authentication failed' "$TOOL" dec "$D/pass" "$D/bad.enc" "$D/x"
	assert_eq "$QP_RC" 4 "exit status for corrupt data"
	cp "$D/c.enc" "$D/bad.enc"
	flip "$D/bad.enc" 20
	assert_stderr_matches 'corrupt scrypt header' "$TOOL" dec "$D/pass" "$D/bad.enc" "$D/x"
}

t_truncation() {
	make_file t 5000
	assert_ok scrypt_enc "$PASS" "$D/t" "$D/t.enc"
	for n in 0 5 60 95 96 127 128 4000 5096 5127; do
		head -c "$n" "$D/t.enc" >"$D/short.enc"
		assert_fails "$TOOL" dec "$D/pass" "$D/short.enc" "$D/short.out"
		assert_not_exists "$D/short.out"
	done
	printf 'not scrypt at all' >"$D/junk"
	assert_stderr_matches 'not a scrypt container' "$TOOL" dec "$D/pass" "$D/junk" "$D/x"
}

qp_test qpool_to_scrypt t_qpool_to_scrypt
qp_test scrypt_to_qpool t_scrypt_to_qpool
qp_test pipes t_pipes
qp_test default_params t_default_params
qp_test wrong_passphrase t_wrong_passphrase
qp_test corruption t_corruption
qp_test truncation t_truncation
qp_done
