#!/bin/sh
# Kernel volumes (driver linux-kernel): the pool, VMs created and started
# with a kernel, kernels that are not installed, the refusal of every change
# of content, qubes.xml as Qubes writes it, VMs without a kernel, and backup
# and restore of VMs that have one.
. "$(dirname "$0")/../lib.sh"

# A kernel folder with two installed kernels: 6.1.0 (vmlinuz, initramfs,
# modules.img) and pvgrub (vmlinuz only, no modules).
K=$TEST_TMP/kernels
mkdir -p "$K/6.1.0" "$K/pvgrub"
printf 'vmlinuz 6.1.0\n' >"$K/6.1.0/vmlinuz"
printf 'initramfs\n' >"$K/6.1.0/initramfs"
head -c 300000 /dev/urandom >"$K/6.1.0/modules.img"
printf 'pvgrub\n' >"$K/pvgrub/vmlinuz"
MODSIZE=300000

# ---- helpers ---------------------------------------------------------------

# fails_with ERE CMD...: CMD exits 1 with a "qpool: " line matching ERE and
# qubes.xml is unchanged.
fails_with() {
	_pat=$1
	shift
	xml_keep
	qp_run "$@"
	assert_eq "$QP_RC" 1 "exit status of '$*' (stderr: $QP_STDERR)"
	printf '%s\n' "$QP_STDERR" | grep -Eq "^qpool: .*($_pat)" ||
		_qp_failed "stderr of '$*' has no 'qpool: ' line matching /$_pat/: $QP_STDERR"
	xml_same "$@"
}

# The default pool (file-reflink, made on first use) and kernel pool 'lk'.
with_kernel_pool() {
	assert_ok qp pool add lk linux-kernel -o dir_path="$K"
}

# vols VM: the names of VM's volumes, one line, sorted.
vols() {
	qp volume list | awk -v vm="$1" '$2 == vm { print $3 }' | sort | tr '\n' ' '
}

# ---- tests -----------------------------------------------------------------

t_pool_add() {
	assert_ok qp pool list
	fails_with "kernel folder '$TEST_TMP/nothere': no such file" \
		qp pool add lk linux-kernel -o dir_path="$TEST_TMP/nothere"
	fails_with "driver 'linux-kernel' has no option 'revisions_to_keep'" \
		qp pool add lk linux-kernel -o dir_path="$K",revisions_to_keep=2
	if [ ! -e /var/lib/qubes/vm-kernels ]; then
		# without dir_path: the Qubes default folder
		fails_with "kernel folder '/var/lib/qubes/vm-kernels'" qp pool add lk linux-kernel
	fi
	with_kernel_pool
	assert_ok qp pool info lk
	assert_match "^driver +linux-kernel$" "$QP_STDOUT"
	assert_match "^dir_path +$K$" "$QP_STDOUT"
	assert_match "^state +online$" "$QP_STDOUT"
	# the installed kernels' files: 6.1.0's three and pvgrub's vmlinuz
	total=$(cat "$K"/*/* | wc -c)
	assert_match "^usage +$total$" "$QP_STDOUT"
	grep -q '<pool name="lk" driver="linux-kernel" dir_path="'"$K"'"/>' "$QPOOL_ROOT/qubes.xml" ||
		_qp_failed "pool not saved as Qubes writes it"
	fails_with "setting option 'dir_path' is not supported" qp pool set lk -o dir_path=/tmp
	assert_ok qp pool drivers
	assert_match '^linux-kernel +dir_path$' "$QP_STDOUT"
}

t_vm_with_kernel() {
	with_kernel_pool
	assert_ok qp vm create --class TemplateVM --kernel 6.1.0 tpl
	assert_ok qp vm create --template tpl work
	assert_eq "$(vols tpl)" "kernel private root volatile "
	# the AppVM takes its template's kernel
	assert_eq "$(vols work)" "kernel private root volatile "
	grep -q '<volume name="kernel" pool="lk" vid="6.1.0" revisions_to_keep="0" rw="False" save_on_stop="False" snap_on_start="False"/>' \
		"$QPOOL_ROOT/qubes.xml" || _qp_failed "kernel volume not saved as Qubes writes it"
	grep -q '<property name="kernel">6.1.0</property>' "$QPOOL_ROOT/qubes.xml" ||
		_qp_failed "no kernel property"
	assert_ok qp volume info work:kernel
	assert_match '^pool +lk$' "$QP_STDOUT"
	assert_match '^vid +6\.1\.0$' "$QP_STDOUT"
	assert_match '^rw +False$' "$QP_STDOUT"
	assert_match "^size +$MODSIZE$" "$QP_STDOUT"
	assert_match "^usage +$MODSIZE$" "$QP_STDOUT"
	assert_match '^revisions_to_keep +0$' "$QP_STDOUT"
	assert_match 'revisions \(for revert\): none' "$QP_STDOUT"
	assert_ok qp vm start work
	assert_match "^kernel $K/6\\.1\\.0/modules\\.img ro$" "$QP_STDOUT"
	assert_match "^private .* rw$" "$QP_STDOUT"
	assert_ok qp volume info work:kernel
	assert_match '^is_outdated +False$' "$QP_STDOUT"
	fails_with "VM 'work' is running" qp vm set-kernel work pvgrub
	assert_ok qp vm stop work
	# export gives the modules image
	qp volume export work:kernel - | cmp - "$K/6.1.0/modules.img" ||
		_qp_failed "export differs from modules.img"
	# a kernel without modules.img starts with nothing to attach
	assert_ok qp vm set-kernel work pvgrub
	grep -q 'vid="pvgrub"' "$QPOOL_ROOT/qubes.xml" || _qp_failed "vid not changed"
	assert_ok qp vm start work
	printf '%s\n' "$QP_STDOUT" | grep -q '^kernel' && _qp_failed "kernel attached: $QP_STDOUT"
	assert_match '^root ' "$QP_STDOUT"
	assert_ok qp vm stop work
	assert_ok qp volume info work:kernel
	assert_match '^size +0$' "$QP_STDOUT"
	# removing VMs leaves the kernels alone
	assert_ok qp vm remove work
	assert_ok qp vm remove tpl
	assert_exists "$K/6.1.0/modules.img"
	assert_exists "$K/pvgrub/vmlinuz"
	assert_ok qp pool remove lk
}

t_missing_kernel() {
	with_kernel_pool
	assert_ok qp vm create --class TemplateVM tpl
	fails_with "kernel '9\\.9' is not installed in pool 'lk'" \
		qp vm create --template tpl --kernel 9.9 work
	assert_eq "$(vols work)" ""
	for bad in .. ../6.1.0 a/b 6.1.0/.. .; do
		fails_with "invalid kernel version '$bad'" qp vm create --template tpl --kernel "$bad" work
	done
	fails_with "cannot set the kernel of VM 'tpl': kernel '9\\.9' is not installed in pool 'lk'" \
		qp vm set-kernel tpl 9.9
	fails_with "invalid kernel version '\\.\\./6\\.1\\.0'" qp vm set-kernel tpl ../6.1.0
	fails_with "cannot set the default kernel: kernel '9\\.9' is not installed" \
		qp vm set-kernel --default 9.9
	fails_with "VM 'nothere' does not exist" qp vm set-kernel nothere 6.1.0
	# a kernel uninstalled after the VM was made: start refused, VM halted
	cp -r "$K" "$TEST_TMP/k2"
	assert_ok qp pool add lk2 linux-kernel -o dir_path="$TEST_TMP/k2"
	# two kernel pools and no default_pool_kernel: which one is ambiguous
	fails_with "several pools of driver 'linux-kernel' \\(set default_pool_kernel\\)" \
		qp vm create --template tpl --kernel 6.1.0 work
	assert_ok qp pool remove lk
	assert_ok qp vm create --template tpl --kernel 6.1.0 work
	# the kernel folder gone while the VM runs: the stop still commits
	assert_ok qp vm start work
	mv "$TEST_TMP/k2" "$TEST_TMP/k2.away"
	assert_ok qp vm stop work
	assert_eq "$(qp vm list | awk '$1 == "work" { print $NF }')" Halted
	mv "$TEST_TMP/k2.away" "$TEST_TMP/k2"
	rm "$TEST_TMP/k2/6.1.0/vmlinuz"
	fails_with "cannot start volume 'work:kernel': kernel '6\\.1\\.0' is not installed in pool 'lk2'" \
		qp vm start work
	assert_eq "$(qp vm list | awk '$1 == "work" { print $NF }')" Halted
	no_dirty=$(find "$QPOOL_ROOT" -name '*-dirty.img')
	assert_eq "$no_dirty" "" "running copies left after the failed start"
	# the pool's folder gone: offline
	rm -r "$TEST_TMP/k2"
	fails_with "pool 'lk2' is offline" qp vm start work
	assert_ok qp vm remove work
}

t_read_only() {
	with_kernel_pool
	assert_ok qp vm create --class TemplateVM --kernel 6.1.0 tpl
	head -c 1000 /dev/zero >"$TEST_TMP/img"
	ro="volume 'tpl:kernel' is read-only: it is managed by linux-kernel pool 'lk'"
	fails_with "$ro" qp volume resize tpl:kernel 1GiB
	fails_with "$ro" qp volume import tpl:kernel "$TEST_TMP/img"
	fails_with "$ro" qp volume import --size 1000 tpl:kernel - <"$TEST_TMP/img"
	fails_with "$ro" qp volume revert tpl:kernel
	fails_with "$ro" qp volume clone -f tpl:private tpl:kernel
	fails_with "$ro" qp volume clear -f tpl:kernel
	fails_with "$ro" qp volume config tpl:kernel rw True
	fails_with "is not saved on stop" qp volume clone -f tpl:kernel tpl:private
	# the kernel's files are untouched
	qp_run cmp "$K/6.1.0/modules.img" "$TEST_TMP/img" && _qp_failed "modules.img replaced"
	assert_eq "$(wc -c <"$K/6.1.0/modules.img")" "$MODSIZE"
}

# qubes.xml with kernel volumes as Qubes writes them (a kernel volume in
# pool "linux-kernel", one with an empty vid) loads, shows and saves back
# unchanged; a kernel volume whose pool is missing fails clearly.
t_xml_round_trip() {
	assert_ok qp vm create --class TemplateVM tpl
	assert_ok qp vm create --template tpl work
	assert_ok qp vm create --template tpl hvm
	assert_ok qp pool add linux-kernel linux-kernel -o dir_path="$K"
	x=$QPOOL_ROOT/qubes.xml
	sed -e '/vid="vm-templates\/tpl\/volatile"/a\
<volume name="kernel" pool="linux-kernel" vid="6.1.0"/>' \
		-e '/vid="appvms\/work\/volatile"/a\
<volume name="kernel" pool="linux-kernel" vid="6.1.0" revisions_to_keep="0" rw="False" save_on_stop="False" snap_on_start="False"/>' \
		-e '/vid="appvms\/hvm\/volatile"/a\
<volume name="kernel" pool="linux-kernel" vid="" revisions_to_keep="0" rw="False" save_on_stop="False" snap_on_start="False"/>' \
		-e 's:<property name="label">red</property>:&<property name="kernel"></property>:' \
		"$x" >"$x.new" && mv "$x.new" "$x"
	assert_eq "$(grep -c 'name="kernel" pool="linux-kernel"' "$x")" 3
	assert_ok qp volume list
	assert_match 'linux-kernel:6\.1\.0 +tpl +kernel' "$QP_STDOUT"
	assert_match 'linux-kernel:6\.1\.0 +work +kernel' "$QP_STDOUT"
	assert_match 'linux-kernel: +hvm +kernel' "$QP_STDOUT"
	assert_ok qp volume info tpl:kernel
	assert_match '^rw +False$' "$QP_STDOUT"
	assert_match '^save_on_stop +False$' "$QP_STDOUT"
	# a save writes each kernel volume in Qubes' full form...
	assert_ok qp vm start work
	assert_match "^kernel $K/6\\.1\\.0/modules\\.img ro$" "$QP_STDOUT"
	grep -q '<volume name="kernel" pool="linux-kernel" vid="6.1.0" rw="False" save_on_stop="False" snap_on_start="False"/>' "$x" ||
		_qp_failed "tpl's kernel volume not written back"
	grep -q '<volume name="kernel" pool="linux-kernel" vid="6.1.0" revisions_to_keep="0" rw="False" save_on_stop="False" snap_on_start="False"/>' "$x" ||
		_qp_failed "work's kernel volume not written back unchanged"
	grep -q '<volume name="kernel" pool="linux-kernel" vid="" revisions_to_keep="0" rw="False" save_on_stop="False" snap_on_start="False"/>' "$x" ||
		_qp_failed "hvm's kernel volume not written back unchanged"
	# ...and from then on every save leaves it byte for byte
	assert_ok qp vm stop work
	xml_keep
	assert_ok qp vm start work
	assert_ok qp vm stop work
	xml_same "start and stop"
	# an empty vid (a VM with no kernel): nothing attached
	assert_ok qp vm start hvm
	printf '%s\n' "$QP_STDOUT" | grep -q '^kernel' && _qp_failed "kernel attached: $QP_STDOUT"
	assert_ok qp vm stop hvm
	# the kernel pool missing from <pools>
	sed 's:<pool name="linux-kernel"[^>]*/>::' "$x" >"$x.new" && mv "$x.new" "$x"
	fails_with "cannot start VM 'work': pool 'linux-kernel' of volume 'work:kernel' does not exist" \
		qp vm start work
	assert_ok qp volume list
	assert_match 'linux-kernel:6\.1\.0 +work +kernel' "$QP_STDOUT"
}

t_without_kernel() {
	# no kernel pool: VMs get no kernel volume, even with a default kernel
	assert_ok qp vm create --class TemplateVM tpl
	assert_eq "$(vols tpl)" "private root volatile "
	fails_with "no pool of driver 'linux-kernel' for kernel '6\\.1\\.0'" \
		qp vm create --template tpl --kernel 6.1.0 work
	assert_ok qp vm set-kernel --default 6.1.0
	assert_ok qp vm create --template tpl work
	assert_eq "$(vols work)" "private root volatile "
	grep -q 'name="kernel"' "$QPOOL_ROOT/qubes.xml" && _qp_failed "a kernel volume was made"
	fails_with "no pool of driver 'linux-kernel'" qp vm set-kernel work 6.1.0
	assert_ok qp vm set-kernel --default ''
	# a kernel pool but no kernel anywhere: still none
	with_kernel_pool
	assert_ok qp vm create --template tpl work2
	assert_eq "$(vols work2)" "private root volatile "
	assert_ok qp vm create --template tpl --kernel '' work3
	assert_eq "$(vols work3)" "private root volatile "
	# the default kernel now applies to new VMs...
	assert_ok qp vm set-kernel --default 6.1.0
	grep -q '<property name="default_kernel">6.1.0</property>' "$QPOOL_ROOT/qubes.xml" ||
		_qp_failed "default_kernel not saved"
	assert_ok qp vm create --template tpl work4
	assert_eq "$(vols work4)" "kernel private root volatile "
	# ...but not to one whose kernel is explicitly none
	assert_ok qp vm create --template tpl --kernel '' work5
	assert_eq "$(vols work5)" "private root volatile "
	# set-kernel gives an existing VM a kernel volume, '' empties its vid
	assert_ok qp vm set-kernel work 6.1.0
	assert_eq "$(vols work)" "kernel private root volatile "
	assert_ok qp vm start work
	assert_match "^kernel $K/6\\.1\\.0/modules\\.img ro$" "$QP_STDOUT"
	assert_ok qp vm stop work
	assert_ok qp vm set-kernel work ''
	assert_ok qp vm start work
	printf '%s\n' "$QP_STDOUT" | grep -q '^kernel' && _qp_failed "kernel attached: $QP_STDOUT"
	assert_ok qp vm stop work
	fails_with "pool 'lk' is in use by volume 'work:kernel'" qp pool remove lk
}

# Backups leave kernel volumes out; a restore of a qubes.xml with kernel
# volumes and a linux-kernel pool works with or without a kernel pool on
# the restoring host.
t_backup_restore() {
	for c in tar; do
		command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
	done
	printf 'pass\n' >"$TEST_TMP/pass"
	with_kernel_pool
	assert_ok qp vm create --class TemplateVM --kernel 6.1.0 tpl
	assert_ok qp vm create --template tpl work
	assert_ok qp vm create --template tpl --kernel '' hvm
	head -c 100000 /dev/urandom >"$TEST_TMP/priv"
	truncate -s 1M "$TEST_TMP/priv"
	assert_ok qp volume import --size 1048576 work:private - <"$TEST_TMP/priv"
	# a running VM with its kernel attached is backed up too
	assert_ok qp vm start work
	arch=$TEST_TMP/kernel-backup
	assert_ok qp backup --passphrase-file "$TEST_TMP/pass" --kdf-log-n 10 --yes "$arch" tpl work hvm
	assert_ok qp vm stop work
	members=$(tar -itf "$arch")
	printf '%s\n' "$members" | grep -q 'kernel' && _qp_failed "a kernel volume was backed up: $members"
	assert_match '^vm[0-9]+/private\.img\.000\.enc$' "$members"
	# a host without a kernel pool
	dst=$TEST_TMP/r1
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$TEST_TMP/pass" "$arch"
	assert_match 'restored 3 VMs' "$QP_STDOUT"
	QPOOL_ROOT=$dst "$QPOOL" volume export work:private - | cmp - "$TEST_TMP/priv" ||
		_qp_failed "work:private differs"
	grep -q 'name="kernel"' "$dst/qubes.xml" && _qp_failed "kernel volume on a host without kernels"
	# a host with a kernel pool and a default kernel: restored VMs use it
	dst=$TEST_TMP/r2
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" pool add lk linux-kernel -o dir_path="$K"
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" vm set-kernel --default pvgrub
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" restore --passphrase-file "$TEST_TMP/pass" "$arch" work tpl
	assert_match 'restored 2 VMs' "$QP_STDOUT"
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" volume info work:kernel
	assert_match '^vid +pvgrub$' "$QP_STDOUT"
	assert_ok env QPOOL_ROOT="$dst" "$QPOOL" vm start work
	QPOOL_ROOT=$dst "$QPOOL" volume export work:private - | cmp - "$TEST_TMP/priv" ||
		_qp_failed "work:private differs"
}

qp_test pool_add t_pool_add
qp_test vm_with_kernel t_vm_with_kernel
qp_test missing_kernel t_missing_kernel
qp_test read_only t_read_only
qp_test xml_round_trip t_xml_round_trip
qp_test without_kernel t_without_kernel
qp_test backup_restore t_backup_restore
qp_done
