#!/bin/sh
# Installs a built provider binary where a plain `terraform init` finds it
# without a registry: the implied local mirror,
#   PLUGINS/registry.terraform.io/drover/drover/VERSION/OS_ARCH/terraform-provider-drover_vVERSION
# with PLUGINS = ~/.terraform.d/plugins unless given.
#
#   scripts/install.sh VERSION BINARY [PLUGINS]
set -eu
version=$1
binary=$2
plugins=${3:-$HOME/.terraform.d/plugins}
platform="$(go env GOOS)_$(go env GOARCH)"
dir="$plugins/registry.terraform.io/drover/drover/$version/$platform"
target="$dir/terraform-provider-drover_v$version"
replaced=""
if [ -e "$target" ] && ! cmp -s "$binary" "$target"; then
	replaced=yes
fi
mkdir -p "$dir"
install -m 0755 "$binary" "$target"
echo "installed drover/drover $version ($platform) in $dir"
echo "use it with: required_providers { drover = { source = \"drover/drover\", version = \"$version\" } }, then terraform init"
if [ -n "$replaced" ]; then
	# Every build between two tags has the same version, so Terraform sees
	# a package whose checksum differs from the one it locked, and refuses it
	# (terraform init -upgrade too: the version did not change).
	echo "note: this replaced another build of $version; in a configuration that ran terraform init before,"
	echo "      delete .terraform.lock.hcl and run terraform init again, or terraform refuses the new build"
	echo "      (\"doesn't match any of the checksums previously recorded in the dependency lock file\")"
fi
