#!/usr/bin/env bash
# The README's quality-against-cost pictures for the recommended presets, on the 8 CBSD432
# images the bundled prior held out from training (128×128 centre crops; never Kodak24/CBSD68):
# PSNR against NFE and against seconds per image, varying the steps per noise level.
#   DATA=/path/to/data bash scripts/nfe_curve.sh     # writes results/nfe/ and docs/nfe_{demosaic,inpaint}.png
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA=/path/to/data, the folder that holds cbsd432/ (README, Data)}
OUT=${OUT:-results/nfe}
PRIOR=${PRIOR:-pretrained/cpu_12ch_64.pth}
DSTEPS=${DSTEPS:-1,2,3,5,8}
ISTEPS=${ISTEPS:-1,2,5,8}
tune() { python scripts/tune.py --prior "$PRIOR" --n 8 --set "data.path=$DATA/cbsd432" "$@"; }
tune --runner restore --config demosaic.yml --grid "test.n_steps_each=$DSTEPS" -o "$OUT/demosaic"
tune --runner restore --config inpaint.yml --set test.mask=random test.missing_rate=0.8 \
  --grid "test.n_steps_each=$ISTEPS" -o "$OUT/inpaint_random80"
python scripts/run_baseline.py --method menon --task demosaic --data "$OUT/demosaic/images" -o "$OUT/menon" --overwrite
python scripts/run_baseline.py --method biharmonic --task inpaint --mask random --missing_rate 0.8 \
  --data "$OUT/inpaint_random80/images" -o "$OUT/biharmonic_random80" --overwrite
join() { local IFS=,; echo "$*"; }
dirs() { for s in ${2//,/ }; do echo "$OUT/$1/n_steps_each=$s"; done; }
python scripts/plot_curve.py "HGM demosaic.yml=$(join $(dirs demosaic "$DSTEPS"))" "Menon 2007=$OUT/menon" \
  --title "Demosaicking (RGGB), held-out CBSD432 crops" -o docs/nfe_demosaic.png
python scripts/plot_curve.py "HGM inpaint.yml=$(join $(dirs inpaint_random80 "$ISTEPS"))" \
  "biharmonic=$OUT/biharmonic_random80" --title "Inpainting (80 % random pixels), held-out CBSD432 crops" \
  -o docs/nfe_inpaint.png
