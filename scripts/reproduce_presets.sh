#!/usr/bin/env bash
# The README's full-protocol tables for the recommended presets (configs/demosaic.yml,
# configs/inpaint.yml, which name the bundled prior):
#  - demosaicking: all 24 Kodak24 images at 500×500, RGGB; bilinear, Malvar, Menon 2007 and HGM;
#  - inpainting: the central 256×256 crop of all 24 images with each mask of masks/; biharmonic and HGM.
#   DATA=/path/to/data bash scripts/reproduce_presets.sh      # writes results/presets/{demosaic,inpaint}.md
# TASKS="demosaic" or "inpaint" runs one half; SUBSET="kodim01 kodim07" a stated subset.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA=/path/to/data, the folder that holds kodak24/ (README, Data)}
KODAK=${KODAK:-$DATA/kodak24}
MASKS=${MASKS:-masks}
ROOT_OUT=${OUT:-results/presets}
SUBSET=${SUBSET-""}
TASKS=${TASKS:-"demosaic inpaint"}
MASKSET=${MASKSET:-"random50 random80 box64 text"}
EXTRA=${EXTRA:-}                      # more --set values for the HGM rows

for task in $TASKS; do
  OUT="$ROOT_OUT/$task"
  source scripts/subset.sh
  if [ "$task" = demosaic ]; then
    rows=()
    for m in bilinear malvar menon; do
      python scripts/run_baseline.py --method $m --task demosaic --data "$OUT/data" -o "$OUT/$m"
      rows+=("$m=$OUT/$m")
    done
    python main.py --runner restore --config demosaic.yml --test -o "$OUT/hgm" --set "test.data_path=$OUT/data" $EXTRA
    python scripts/make_table.py "${rows[@]}" "HGM (demosaic.yml)=$OUT/hgm" | tee "$ROOT_OUT/demosaic.md"
  else
    : > "$ROOT_OUT/inpaint.md"
    for mask in $MASKSET; do
      M="$(realpath "$MASKS")/$mask.png"
      python scripts/run_baseline.py --method biharmonic --task inpaint --mask "$M" --image_size 256 \
        --data "$OUT/data" -o "$OUT/$mask/biharmonic"
      python main.py --runner restore --config inpaint.yml --test -o "$OUT/$mask/hgm" \
        --set "test.data_path=$OUT/data" "test.mask=$M" test.image_size=256 $EXTRA
      { echo; echo "**mask $mask**"; echo; python scripts/make_table.py biharmonic="$OUT/$mask/biharmonic" \
          "HGM (inpaint.yml)=$OUT/$mask/hgm"; } | tee -a "$ROOT_OUT/inpaint.md"
    done
  fi
done
