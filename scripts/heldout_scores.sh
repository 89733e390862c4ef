#!/usr/bin/env bash
# Held-out quality of one or more priors with the recommended presets: the 8 CBSD432 images each
# prior held out from training (128×128 centre crops; never Kodak24/CBSD68), RGGB demosaicking
# (configs/demosaic.yml), 80 % random pixels and a centred 64×64 box (configs/inpaint.yml).
# Prints one markdown row per prior (mean PSNR in dB, NFE in brackets); writes results/heldout/.
#   DATA=/path/to/data bash scripts/heldout_scores.sh pretrained/cpu_12ch_64.pth run/logs/more/checkpoint.pth
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA=/path/to/data, the folder that holds cbsd432/ (README, Data)}
OUT=${OUT:-results/heldout}
EXTRA=${EXTRA:-}                      # more --set values, e.g. "test.temperature=1"
[ $# -ge 1 ] || { echo "usage: DATA=... bash scripts/heldout_scores.sh PRIOR [PRIOR ...]" >&2; exit 2; }
mean() { python -c "import sys; from evaluation.report import mean_row; r, _ = mean_row(sys.argv[1]); \
print(f\"{float(r['psnr']):.2f} ({r['nfe']})\")" "$1"; }
echo "| prior | demosaicking | random 80 % | box 64×64 |"
echo "|---|---|---|---|"
for prior in "$@"; do
  name=$(echo "$prior" | tr '/' '_')
  o="$OUT/$name"
  score() {  # config, output name, more --set values
    mkdir -p "$o"
    TQDM_DISABLE=1 python scripts/tune.py --runner restore --config "$1" --prior "$prior" --n 8 \
      --set "data.path=$DATA/cbsd432" $EXTRA "${@:3}" -o "$o/$2" > "$o/$2.log" 2>&1 \
      || { echo "error: scoring $prior with $1 failed; see $o/$2.log" >&2; exit 1; }
    mean "$o/$2/default"
  }
  d=$(score demosaic.yml demosaic)
  r=$(score inpaint.yml random80 test.mask=random test.missing_rate=0.8)
  b=$(score inpaint.yml box64 test.mask=box test.box_size=64)
  echo "| $prior | $d | $r | $b |"
done
