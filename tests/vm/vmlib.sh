# Helpers for guest scripts of qpool's test VM (busybox sh).  Source it:
#	. /tests/vm/vmlib.sh
#
# vm_pass NAME / vm_fail NAME [WHY] / vm_skip NAME WHY: result lines the host
#	side counts ("PASS: NAME"...); vm_fail makes vm_status return 1.
# vm_step NAME CMD...: runs CMD (output kept in $VM_LOG, shown on failure)
#	and prints PASS or FAIL for NAME.
# vm_host CMD: asks the host to send CMD to the qemu monitor (the host reads
#	the console live); returns at once, without waiting for an effect.
# vm_disk_dev N: the device of disk N (0 -> /dev/vda, 1 -> /dev/vdb...).
# vm_unplug N [SECONDS]: removes disk N (qemu id diskN) at run time and waits
#	(default 30 s) for its device to vanish; returns 1 if it stays.
# vm_replug N [SECONDS]: adds disk N back (its image in $QP_VM_HOST_DIR,
#	qemu id diskNb) and prints the name of the new block device; returns 1
#	when none appears in time (default 30 s).
# vm_luks_open KEYFILE DEV NAME: formats DEV as LUKS2 with the key in KEYFILE
#	(a cheap PBKDF: tests only) and opens it as /dev/mapper/NAME.
# vm_status: 0 when no vm_fail was printed.
#
# For scripts that run qpool (set T, a work folder, and R, the state folder):
# q ARGS...: qpool on R.  die MSG: prints MSG as a comment line and exits 1.
# ok ARGS...: q, dying with its message on failure (output in $T/out).
# fails ERE ARGS...: q must fail with a message matching ERE.
# sub CMD...: CMD in a subshell, so that die ends only CMD.

VM_NFAIL=0
VM_LOG=${TEST_TMP:-/tmp}/vm-step.log

vm_pass() {
	echo "PASS: $1"
}

vm_fail() {
	VM_NFAIL=$((VM_NFAIL + 1))
	echo "FAIL: $1"
	[ -z "${2:-}" ] || echo "  # $2"
}

vm_skip() {
	echo "SKIP: $1 $2"
}

vm_step() {
	_vm_n=$1
	shift
	"$@" >"$VM_LOG" 2>&1 && {
		vm_pass "$_vm_n"
		return 0
	}
	_vm_rc=$?
	vm_fail "$_vm_n" "'$*' exited $_vm_rc"
	sed 's/^/  # /' "$VM_LOG" | tail -n 30
	return 1
}

vm_host() {
	echo "### HOST: $*"
}

vm_disk_dev() {
	set -- "$1" a b c d e f g h i j k l m n o p
	shift $(($1 + 1))
	echo "/dev/vd$1"
}

vm_unplug() {
	_vm_d=$(vm_disk_dev "$1")
	_vm_t=$((${2:-30} * 10))
	vm_host "device_del disk$1"
	while [ -b "$_vm_d" ] && [ "$_vm_t" -gt 0 ]; do
		sleep 0.1
		_vm_t=$((_vm_t - 1))
	done
	[ ! -b "$_vm_d" ]
}

vm_replug() {
	_vm_before=$(ls /sys/block | tr '\n' ' ')
	_vm_t=$((${2:-30} * 10))
	vm_host "drive_add 0 if=none,id=drive$1b,file=$QP_VM_HOST_DIR/disk$1.img,format=raw,cache=unsafe" >&2
	vm_host "device_add virtio-blk-pci,drive=drive$1b,id=disk$1b" >&2
	while [ "$_vm_t" -gt 0 ]; do
		sleep 0.1
		for _vm_b in $(ls /sys/block); do
			case " $_vm_before " in
			*" $_vm_b "*) ;;
			*)
				echo "$_vm_b"
				return 0
				;;
			esac
		done
		_vm_t=$((_vm_t - 1))
	done
	return 1
}

vm_luks_open() {
	cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file "$1" "$2" && cryptsetup open --key-file "$1" "$2" "$3"
}

vm_status() {
	[ "$VM_NFAIL" = 0 ]
}

q() {
	"$QPOOL" --root "$R" "$@"
}

die() {
	echo "  # $*"
	exit 1
}

ok() {
	q "$@" >"$T/out" 2>"$T/err" || die "'qpool $*' failed: $(cat "$T/err")"
}

fails() {
	_vm_p=$1
	shift
	if q "$@" >"$T/out" 2>"$T/err"; then
		die "'qpool $*' succeeded"
	fi
	grep -q "$_vm_p" "$T/err" || die "'qpool $*': expected /$_vm_p/, got: $(cat "$T/err")"
	echo "  # $(cat "$T/err")"
}

sub() {
	("$@")
}
