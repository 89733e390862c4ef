#!/usr/bin/env bash
# Regenerates the README's inpainting table: central 256×256 crops of Kodak24
# with each mask of masks/, biharmonic and the HGM variants with
# the bundled priors, one protocol for every row. CPU-sized defaults (a stated
# subset of images); for the full protocol: SUBSET="".
#   DATA=/path/to/data bash scripts/reproduce_inpaint.sh             # writes results/inpaint/table.md
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA=/path/to/data, the folder that holds kodak24/ (README, Data)}
KODAK=${KODAK:-$DATA/kodak24}                 # the Kodak24 images (kodim01.png ... kodim24.png)
MASKS=${MASKS:-masks}                 # the masks of the tables, in the repo
OUT=${OUT:-results/inpaint}
SUBSET=${SUBSET-"kodim01 kodim07 kodim13 kodim19"}
MASKSET=${MASKSET:-"random50 random80 box64 text"}
VARIANTS=${VARIANTS:-"12ch 6ch 3ch"}
CONFIG=${CONFIG:-cpu_inpaint.yml}
PRIORS=${PRIORS:-pretrained}
EXTRA=${EXTRA:-}

source scripts/subset.sh
declare -A RUNNER=([3ch]=Test_3ch_inpainting_rgbrgb_256 [6ch]=Test_6ch_inpainting_rgbrgb_256 [12ch]=Test_12ch_inpainting_pool)
: > "$OUT/table.md"
for mask in $MASKSET; do
  M="$(realpath "$MASKS")/$mask.png"
  python scripts/run_baseline.py --method biharmonic --task inpaint --mask "$M" --image_size 256 \
    --data "$OUT/data" -o "$OUT/$mask/biharmonic"
  rows=(biharmonic="$OUT/$mask/biharmonic")
  for v in $VARIANTS; do
    python main.py --runner "${RUNNER[$v]}" --config "$CONFIG" --doc table --test -o "$OUT/$mask/hgm_$v" \
      --set "test.data_path=$OUT/data" "test.checkpoint=$PRIORS/cpu_$v.pth" "test.mask=$M" test.image_size=256 $EXTRA
    rows+=("HGM $v"="$OUT/$mask/hgm_$v")
  done
  { echo; echo "**mask $mask**"; echo; python scripts/make_table.py "${rows[@]}"; } | tee -a "$OUT/table.md"
done
