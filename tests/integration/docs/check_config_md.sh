#!/usr/bin/env bash
# docs/configuration.md must be what config_md prints from the library's table.
# Usage: check_config_md.sh CONFIG_MD_PROGRAM DOCS_FILE
set -uo pipefail
if ! diff -u "$2" <("$1"); then
    echo "FAIL: $2 is not what the settings table gives; regenerate it:" >&2
    echo "  $1 > $2" >&2
    exit 1
fi
echo "ok: $2 matches the settings table"
