#!/usr/bin/env bash
# Regenerates the README's demosaicking table: RGGB mosaics of Kodak24 images,
# classical baselines and every HGM variant with the bundled priors, one
# protocol for every row. CPU-sized defaults (a stated subset); for the full
# protocol: SUBSET="" CROP="" (all 24 images, 500×500).
#   DATA=/path/to/data bash scripts/reproduce_demosaic.sh            # writes results/demosaic/table.md
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA=/path/to/data, the folder that holds kodak24/ (README, Data)}
KODAK=${KODAK:-$DATA/kodak24}                 # the Kodak24 images (kodim01.png ... kodim24.png)
OUT=${OUT:-results/demosaic}
SUBSET=${SUBSET-"kodim01 kodim07 kodim13 kodim19"}
CROP=${CROP-256}                      # centre crop; "" = the whole image
CONFIG=${CONFIG:-cpu_demosaic.yml}
PRIORS=${PRIORS:-pretrained}
EXTRA=${EXTRA:-}                      # more --set values, e.g. "test.n_steps_each=20"

source scripts/subset.sh
CROPARG=(); SETCROP=()
if [ -n "$CROP" ]; then CROPARG=(--image_size "$CROP"); SETCROP=("test.image_size=$CROP"); fi

for m in bilinear malvar; do
  python scripts/run_baseline.py --method $m --task demosaic --data "$OUT/data" "${CROPARG[@]}" -o "$OUT/$m"
done
hgm() {  # runner, prior, output name, more --set values
  python main.py --runner "$1" --config "$CONFIG" --doc table --test -o "$OUT/$3" \
    --set "test.data_path=$OUT/data" "test.checkpoint=$PRIORS/$2" "${SETCROP[@]}" $EXTRA "${@:4}"
}
hgm restore cpu_3ch.pth hgm_3ch data.transform=identity
hgm Test_6ch_demoscaicking_copy cpu_6ch.pth hgm_6ch
hgm Test_12ch_demoscaicking_pool cpu_12ch.pth hgm_12ch
hgm Test_6ch_demoscaicking_copy_p cpu_6ch.pth hgm_6ch_p "test.progressive.prev_folder=$OUT/hgm_3ch/restored"
hgm Test_12ch_demoscaicking_pool_p cpu_12ch.pth hgm_12ch_p "test.progressive.prev_folder=$OUT/hgm_3ch/restored"

python scripts/make_table.py bilinear="$OUT/bilinear" malvar="$OUT/malvar" "HGM 3ch"="$OUT/hgm_3ch" \
  "HGM 6ch"="$OUT/hgm_6ch" "HGM 12ch"="$OUT/hgm_12ch" "HGM 6ch progressive"="$OUT/hgm_6ch_p" \
  "HGM 12ch progressive"="$OUT/hgm_12ch_p" | tee "$OUT/table.md"
