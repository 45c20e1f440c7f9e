#!/bin/sh
# Prints Drover's version from git tags (vMAJOR.MINOR.PATCH): the tag itself
# on a tagged commit; after it, the next patch version (0.1.0 before any
# tag), so that a build between releases sorts after the release it follows.
# Terraform picks providers by plain versions, so there is no suffix; the
# commit is stamped into the binaries separately (scripts/commit.sh).
set -eu
cd "$(dirname "$0")/.."
if tag=$(git describe --tags --exact-match --match 'v[0-9]*.[0-9]*.[0-9]*' 2>/dev/null); then
	echo "${tag#v}"
	exit 0
fi
if last=$(git describe --tags --abbrev=0 --match 'v[0-9]*.[0-9]*.[0-9]*' 2>/dev/null); then
	v=${last#v}
	major=${v%%.*}
	rest=${v#*.}
	minor=${rest%%.*}
	patch=${rest#*.}
	patch=${patch%%[!0-9]*}
	echo "$major.$minor.$((patch + 1))"
	exit 0
fi
echo "0.1.0"
