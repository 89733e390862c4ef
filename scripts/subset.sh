# Sourced by the reproduce_* scripts: start a fresh $OUT (an earlier one is moved
# aside, never deleted) and link the evaluation images ($SUBSET stems of $KODAK,
# or all of them when SUBSET is empty) into $OUT/data.
[ -e "$OUT" ] && mv "$OUT" "$OUT.old-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/data"
if [ -n "$SUBSET" ]; then
  for s in $SUBSET; do ln -s "$(realpath "$KODAK")/$s.png" "$OUT/data/$s.png"; done
else
  for f in "$KODAK"/*; do ln -s "$(realpath "$f")" "$OUT/data/"; done
fi
