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
mkdir -p "$dir"
install -m 0755 "$binary" "$dir/terraform-provider-drover_v$version"
echo "installed drover/drover $version ($platform) in $dir"
echo "use it with: required_providers { drover = { source = \"drover/drover\", version = \"$version\" } }, then terraform init"
