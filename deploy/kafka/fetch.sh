#!/usr/bin/env bash
# Put the Kafka broker and its runtime jars into DEST/libs, from Maven Central.
#
# Usage: deploy/kafka/fetch.sh DEST
#
# The test suite and local runs start the broker with `java -cp 'DEST/libs/*'`, so no Docker and
# no tarball from a download site are needed: Maven resolves everything from pom.xml beside this
# script. Idempotent: DEST/.fetched records the Kafka version and a checksum of pom.xml, and a
# second run with the same pom exits at once without touching the network. Jars are copied into a
# scratch directory first and moved into place only when complete, so an interrupted run never
# leaves a half-filled libs/ that looks finished.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DEST" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
dest="$1"
marker="$dest/.fetched"

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n 1)"
if [ -z "$version" ]; then
    echo "fetch.sh: no <kafka.version> in $pom" >&2
    exit 1
fi
pom_sum="$(sha256sum "$pom" | cut -d' ' -f1)"
want="kafka=$version pom=$pom_sum"

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -d "$dest/libs" ]; then
    echo "Kafka $version already in $dest/libs"
    exit 0
fi

for tool in mvn java; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "fetch.sh: '$tool' is not installed (Kafka needs Java 17+ and Maven 3.8+)" >&2
        exit 1
    fi
done

mkdir -p "$dest"
scratch="$(mktemp -d "$dest/.libs.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "Fetching Kafka $version and its runtime dependencies into $dest/libs"
# Maven's output goes to a log that is shown only when it fails: on success it is noise.
log="$dest/fetch.log"
if ! mvn --batch-mode --no-transfer-progress -Dstyle.color=never -f "$pom" \
    dependency:copy-dependencies \
    -DincludeScope=runtime \
    -DoutputDirectory="$scratch" >"$log" 2>&1; then
    cat "$log" >&2
    echo "fetch.sh: Maven could not resolve Kafka $version (full log: $log)" >&2
    exit 1
fi

if [ ! -f "$scratch/kafka_2.13-$version.jar" ]; then
    echo "fetch.sh: Maven finished but kafka_2.13-$version.jar is missing from $scratch" >&2
    exit 1
fi

rm -rf "$dest/libs" "$marker"
mv "$scratch" "$dest/libs"
trap - EXIT
printf '%s\n' "$want" >"$marker"
echo "Kafka $version: $(find "$dest/libs" -name '*.jar' | wc -l) jars in $dest/libs"
