#!/bin/sh
# Builds a release in the layout the Terraform registry expects (the one
# goreleaser makes for hashicorp/terraform-provider-scaffolding-framework):
#
#   OUT/terraform-provider-drover_VERSION_OS_ARCH.zip   the provider, as terraform-provider-drover_vVERSION
#   OUT/drover-target_VERSION_OS_ARCH.zip               the storage box daemon
#   OUT/terraform-provider-drover_VERSION_manifest.json terraform-registry-manifest.json
#   OUT/terraform-provider-drover_VERSION_SHA256SUMS    sha256 of every file above
#   OUT/terraform-provider-drover_VERSION_SHA256SUMS.sig  detached GPG signature, when a key is given
#
#   scripts/release.sh [-o OUT] [-k GPG_KEY_ID]     (VERSION from scripts/version.sh, or $VERSION)
#
# Only the machine's own platform is built: the provider links libvirt with
# cgo, and a cross build would need each platform's C toolchain and libvirt.
set -eu
cd "$(dirname "$0")/.."
out=dist
key=""
while getopts o:k: opt; do
	case $opt in
	o) out=$OPTARG ;;
	k) key=$OPTARG ;;
	*) echo "usage: scripts/release.sh [-o OUT] [-k GPG_KEY_ID]" >&2; exit 2 ;;
	esac
done
version=${VERSION:-$(scripts/version.sh)}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
platform="$(go env GOOS)_$(go env GOARCH)"
ldflags="-s -w -X main.version=$version -X main.commit=$commit"

rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir "$work/provider" "$work/target"
go build -trimpath -ldflags "$ldflags" -o "$work/provider/terraform-provider-drover_v$version" .
go build -trimpath -ldflags "$ldflags" -o "$work/target/drover-target" ./target/cmd/drover-target
cp README.md CHANGELOG.md "$work/provider/"
cp README.md CHANGELOG.md docs/target.md "$work/target/"

(cd "$work/provider" && zip -q -X "../terraform-provider-drover_${version}_${platform}.zip" ./*)
(cd "$work/target" && zip -q -X "../drover-target_${version}_${platform}.zip" ./*)
mv "$work"/*.zip "$out/"
cp terraform-registry-manifest.json "$out/terraform-provider-drover_${version}_manifest.json"

sums="terraform-provider-drover_${version}_SHA256SUMS"
(cd "$out" && sha256sum -- *.zip *_manifest.json > "$sums")
if [ -n "$key" ]; then
	gpg --batch --yes --local-user "$key" --output "$out/$sums.sig" --detach-sign "$out/$sums"
fi
echo "release $version ($platform) in $out:"
ls -1 "$out"
