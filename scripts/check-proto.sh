#!/usr/bin/env bash
# Contract checks: buf lint (STANDARD), buf format, generated code up to date (the TypeScript and the
# descriptor set with source info that the fabric CLI builds its commands and help from), and no breaking
# change against the previous commit that had contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf

"$buf" lint
"$buf" format --diff --exit-code

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$buf" generate -o "$tmp"
# After generate: buf.gen.yaml's `clean: true` empties proto/gen first.
"$buf" build -o "$tmp/proto/gen/descriptors.binpb"
if ! diff -r "$tmp/proto/gen" proto/gen >"$tmp/diff.txt"; then
  head -n 40 "$tmp/diff.txt"
  echo "proto/gen is stale: run 'npm run generate' and commit the result" >&2
  exit 1
fi

if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  "$buf" breaking --against ".git#ref=HEAD~1"
fi
echo "contracts: lint, format, generated code and breaking checks passed"
