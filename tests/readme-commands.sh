#!/usr/bin/env bash
# Prints the commands of one of README.md's quick starts, one a line, so that
# a test can run exactly what the README shows.
#
#   tests/readme-commands.sh operator|developer [README]
#
# A quick start's commands are the fenced block right after the line
# "<!-- readme-commands: NAME -->".  Blank lines and comment lines are left
# out, and so is a trailing comment (a "#" after a blank).  Exits 1 if the
# README has no such block or the block is empty.  tests/readme.rs checks that
# this script and the Rust test read the same commands.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 operator|developer [README]" >&2
	exit 64
fi
name=$1
readme=${2:-"$(dirname "$0")/../README.md"}

awk -v marker="<!-- readme-commands: $name -->" '
	state == 0 && $0 == marker { state = 1; next }
	state == 1 {
		if ($0 !~ /^```/) { exit }
		state = 2; next
	}
	state == 2 {
		if ($0 ~ /^```/) { state = 3; exit }
		line = $0
		sub(/[ \t]+#.*$/, "", line)
		sub(/^[ \t]+/, "", line)
		if (line == "" || line ~ /^#/) next
		print line
		found = 1
	}
	END { exit !(state == 3 && found) }
' "$readme" || {
	echo "$0: $readme has no non-empty fenced block after <!-- readme-commands: $name -->" >&2
	exit 1
}
