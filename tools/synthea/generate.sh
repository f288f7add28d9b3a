#!/bin/sh
# Generate Synthea patients as FHIR R4 bundles, reproducibly: fixed seeds and reference date.
# Usage: generate.sh OUT_DIR [PATIENTS]. Needs Java 17 and Maven (dependencies from Maven
# Central, cached in ~/.m2 and tools/synthea/lib/).
set -eu
out=$1
patients=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/lib" ]; then
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$here/lib.tmp"
    mv "$here/lib.tmp" "$here/lib"
fi
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
java -cp "$here/lib/*" App -s 42 -cs 42 -r 20260101 -p "$patients" \
    --exporter.baseDirectory="$out.tmp" --exporter.fhir.export=true \
    --exporter.hospital.fhir.export=true --exporter.practitioner.fhir.export=true \
    --exporter.csv.export=false --generate.only_alive_patients=true Massachusetts >/dev/null
rm -rf "$out"
mv "$out.tmp/fhir" "$out"
rm -rf "$out.tmp"
