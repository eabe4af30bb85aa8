#!/usr/bin/env bash
# A run of 60 steps and a run stopped after 25, saved and resumed to 60 end on
# the same loss (the library tests check the bits; this checks the flags).
set -euo pipefail
sim=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
flags=(-p mlp -c blocksign -w 3 -n --wd 1e-4 --schedule cosine --warmup 5 -e 5)
"$sim" "${flags[@]}" -s 60 > "$dir/whole.txt"
"$sim" "${flags[@]}" -s 60 --stop-after 25 --save "$dir/ckpt" > "$dir/first.txt"
"$sim" "${flags[@]}" -s 60 --resume "$dir/ckpt" > "$dir/second.txt"
whole=$(grep -E '^ +60 ' "$dir/whole.txt")
resumed=$(grep -E '^ +60 ' "$dir/second.txt")
echo "whole:   $whole"
echo "resumed: $resumed"
[ -n "$whole" ] && [ "$whole" = "$resumed" ]
# A corrupted checkpoint is refused with a clear message.
printf 'X' | dd of="$dir/ckpt" bs=1 seek=40 conv=notrunc status=none
if "$sim" "${flags[@]}" -s 60 --resume "$dir/ckpt" 2> "$dir/err.txt"; then
  echo "a corrupted checkpoint was accepted"; exit 1
fi
grep -q "corrupt" "$dir/err.txt"
