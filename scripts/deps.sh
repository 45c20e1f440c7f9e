#!/bin/sh
# Installs what Drover's build, lab and tests need and this machine lacks:
# Debian packages (see ../shared/LAB.md) and, when no terraform CLI is on PATH,
# a terraform built from the Go module proxy into .lab/tools. Quiet when all
# is there; safe to run again.
set -eu
cd "$(dirname "$0")/.."

packages="libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
qemu-system-x86 qemu-block-extra qemu-utils libiscsi-bin tgt busybox-static cpio xfsprogs
openssh-server openssh-client zip gnupg restic"

missing=""
for p in $packages; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing Debian packages:$missing; install them as root (apt-get install$missing)" >&2
		exit 1
	fi
	echo "deps: installing$missing (about two minutes)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	echo "deps: no Go toolchain on PATH: install Go 1.26 (https://go.dev/dl) and retry" >&2
	exit 1
fi

# The acceptance tests and tfplugindocs run the terraform CLI from PATH. v1.8.5
# is the newest that builds with `go install` (later ones carry replace
# directives); Drover's schema needs nothing newer.
if ! command -v terraform >/dev/null 2>&1; then
	echo "deps: no terraform on PATH; building terraform v1.8.5 into .lab/tools (about two minutes)."
	echo "deps: to use your own, put terraform >= 1.8 on PATH (https://developer.hashicorp.com/terraform/install)."
	mkdir -p .lab/tools
	GOBIN="$PWD/.lab/tools" go install -trimpath \
		-ldflags "-s -w -X github.com/hashicorp/terraform/version.dev=no" \
		github.com/hashicorp/terraform@v1.8.5
fi
