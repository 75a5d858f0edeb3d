# Helpers shared by tests/vm/build-initramfs.sh and tests/vm/run.sh (sourced;
# POSIX sh).  They find the kernel the test VM boots and what the harness
# needs on the host.

# vm_kver: the newest kernel version that has both /boot/vmlinuz-KV and
# /lib/modules/KV (QP_VM_KVER overrides).  Prints nothing when there is none.
vm_kver() {
	if [ -n "${QP_VM_KVER:-}" ]; then
		printf '%s\n' "$QP_VM_KVER"
		return 0
	fi
	for _vm_d in /lib/modules/*; do
		[ -d "$_vm_d/kernel" ] || continue
		_vm_k=${_vm_d##*/}
		[ -r "/boot/vmlinuz-$_vm_k" ] && printf '%s\n' "$_vm_k"
	done | sort -V | tail -n 1
}

# vm_missing: prints why the VM tier cannot run here (nothing when it can).
vm_missing() {
	if [ "$(id -u)" != 0 ]; then
		echo "needs root (reads /boot/vmlinuz and the module tree)"
		return 0
	fi
	for _vm_c in qemu-system-x86_64 cpio gzip depmod modprobe lvm dmsetup pdata_tools; do
		if ! command -v "$_vm_c" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$_vm_c" ] &&
			[ ! -x "/sbin/$_vm_c" ]; then
			echo "$_vm_c is not installed"
			return 0
		fi
	done
	if [ ! -x /bin/busybox ] || ! busybox_is_static /bin/busybox; then
		echo "a static /bin/busybox (busybox-static) is not installed"
		return 0
	fi
	if [ -z "$(vm_kver)" ]; then
		echo "no kernel with modules (linux-image-amd64) is installed"
		return 0
	fi
}

busybox_is_static() {
	! ldd "$1" 2>/dev/null | grep -q '=>'
}

# vm_cache: the folder that keeps the parts of the initramfs that do not
# change between runs (QP_VM_CACHE overrides).
vm_cache() {
	printf '%s\n' "${QP_VM_CACHE:-${TMPDIR:-/tmp}/qpool-vm-cache}"
}
