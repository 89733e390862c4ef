#!/usr/bin/env bash
# The README's tables, one task at a time, each row by the same protocol:
#   DATA=/path/to/data bash scripts/reproduce.sh demosaic   # Kodak24 500×500, RGGB: bilinear, Malvar,
#                                                           # Menon 2007, HGM (configs/demosaic.yml)
#   DATA=/path/to/data bash scripts/reproduce.sh inpaint    # Kodak24 centre 256×256 × the four masks:
#                                                           # biharmonic, harmonic, OpenCV's Telea and Navier-Stokes
#                                                           # (pip install opencv-python-headless), HGM
#                                                           # (configs/inpaint.yml)
#   DATA=/path/to/data bash scripts/reproduce.sh noisy      # Kodak24 500×500, RGGB, Gaussian noise σ 5/10/15
#                                                           # of 255 (seeded per image): Menon, Menon then
#                                                           # non-local means and the reverse order, HGM
#                                                           # (configs/demosaic_noisy.yml)
#   DATA=/path/to/data bash scripts/reproduce.sh noisy_inpaint  # Kodak24 centre 256×256 × the four masks, noise
#                                                           # σ 10 of 255: biharmonic, biharmonic, harmonic or Telea then
#                                                           # non-local means, HGM (configs/inpaint.yml)
#   DATA=/path/to/data bash scripts/reproduce.sh variants   # the paper's 3/6/12-channel and progressive
#                                                           # variants with the bundled priors (demosaicking)
# Writes results/<task>/table.md (an earlier results/<task> is moved aside, never deleted).
# Settings (environment): SUBSET="kodim01 kodim07" a stated subset of the images; PRIOR=path
# the HGM rows with another prior (any transform and noise levels: the presets fit any prior);
# EXTRA="test.n_steps_each=10" more --set values for the HGM rows; CROP=256 a centre crop
# (variants; default the whole image); OUT=folder; CHECK=0 skips the check of $DATA/kodak24;
# MASKSET="random50 box64" some of the inpainting masks; SIGMAS="10" the noise levels (noisy: 5 10 15,
# noisy_inpaint: 10).
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?usage: bash scripts/reproduce.sh demosaic|inpaint|noisy|noisy_inpaint|variants}
DATA=${DATA:?set DATA=/path/to/data, the folder that holds kodak24/ (README, Data)}
KODAK=${KODAK:-$DATA/kodak24}
OUT=${OUT:-results/$TASK}
SUBSET=${SUBSET-""}
CROP=${CROP-""}
PRIOR=${PRIOR:-}
EXTRA=${EXTRA:-}
MASKSET=${MASKSET:-"random50 random80 box64 text"}
if [ "$TASK" = noisy_inpaint ]; then SIGMAS=${SIGMAS:-"10"}; else SIGMAS=${SIGMAS:-"5 10 15"}; fi
case "$TASK" in demosaic|inpaint|noisy|noisy_inpaint|variants) ;;
  *) echo "error: unknown task $TASK (demosaic | inpaint | noisy | noisy_inpaint | variants)" >&2; exit 2;; esac
if [ "${CHECK:-1}" != 0 ]; then python scripts/prepare_data.py check kodak24 "$KODAK"; fi

# a fresh $OUT; the images ($SUBSET stems of $KODAK, or all of them) linked into $OUT/data
[ -e "$OUT" ] && mv "$OUT" "$OUT.old-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/data"
if [ -n "$SUBSET" ]; then
  for s in $SUBSET; do ln -s "$(realpath "$KODAK")/$s.png" "$OUT/data/$s.png"; done
else
  for f in "$KODAK"/*.png; do ln -s "$(realpath "$f")" "$OUT/data/"; done
fi
CROPARG=(); SETS=("test.data_path=$OUT/data")
if [ -n "$CROP" ]; then CROPARG=(--image_size "$CROP"); SETS+=("test.image_size=$CROP"); fi
if [ -n "$PRIOR" ]; then SETS+=("test.checkpoint=$PRIOR"); fi
baseline() {  # method, task, output name, more arguments
  python scripts/run_baseline.py --method "$1" --task "$2" --data "$OUT/data" "${CROPARG[@]}" -o "$OUT/$3" "${@:4}"
}
hgm() {  # runner, config, output name, more --set values
  python main.py --runner "$1" --config "$2" --test -o "$OUT/$3" --set "${SETS[@]}" $EXTRA "${@:4}"
}

case "$TASK" in
demosaic)
  rows=()
  for m in bilinear malvar menon; do baseline $m demosaic $m; rows+=("$m=$OUT/$m"); done
  hgm restore demosaic.yml hgm
  python scripts/make_table.py "${rows[@]}" "HGM (demosaic.yml)=$OUT/hgm" | tee "$OUT/table.md" ;;
inpaint)
  CROPARG=(--image_size 256); SETS+=(test.image_size=256)
  : > "$OUT/table.md"
  for mask in $MASKSET; do
    M="$(realpath masks)/$mask.png"
    rows=()
    for m in biharmonic harmonic telea ns; do baseline $m inpaint "$mask/$m" --mask "$M"; rows+=("$m=$OUT/$mask/$m"); done
    hgm restore inpaint.yml "$mask/hgm" "test.mask=$M"
    { echo; echo "**mask $mask**"; echo
      python scripts/make_table.py "${rows[@]}" "HGM (inpaint.yml)=$OUT/$mask/hgm"
    } | tee -a "$OUT/table.md"
  done ;;
noisy)  # every method sees the same seeded noisy mosaic (datasets/noise.py)
  : > "$OUT/table.md"
  for s in $SIGMAS; do
    rows=()
    for m in menon nlm+menon menon+nlm; do
      baseline $m demosaic "sigma$s/$m" --noise_sigma "$s"; rows+=("$m=$OUT/sigma$s/$m")
    done
    hgm restore demosaic_noisy.yml "sigma$s/hgm" "test.noise_sigma=$s"
    { echo; echo "**noise σ $s of 255**"; echo
      python scripts/make_table.py "${rows[@]}" "HGM (demosaic_noisy.yml)=$OUT/sigma$s/hgm"
    } | tee -a "$OUT/table.md"
  done ;;
noisy_inpaint)  # the same seeded noisy samples for every method
  CROPARG=(--image_size 256); SETS+=(test.image_size=256)
  : > "$OUT/table.md"
  for s in $SIGMAS; do
    for mask in $MASKSET; do
      M="$(realpath masks)/$mask.png"
      rows=()
      for m in biharmonic biharmonic+nlm harmonic+nlm telea+nlm; do
        baseline $m inpaint "sigma$s/$mask/$m" --mask "$M" --noise_sigma "$s"; rows+=("$m=$OUT/sigma$s/$mask/$m")
      done
      hgm restore inpaint.yml "sigma$s/$mask/hgm" "test.mask=$M" "test.noise_sigma=$s"
      { echo; echo "**mask $mask, noise σ $s of 255**"; echo
        python scripts/make_table.py "${rows[@]}" "HGM (inpaint.yml)=$OUT/sigma$s/$mask/hgm"
      } | tee -a "$OUT/table.md"
    done
  done ;;
variants)  # the earlier few-step preset (configs/history/cpu_demosaic.yml) for every variant
  P=pretrained
  for m in bilinear malvar; do baseline $m demosaic $m; done
  hgm restore cpu_demosaic.yml hgm_3ch "test.checkpoint=$P/cpu_3ch.pth"
  hgm Test_6ch_demoscaicking_copy cpu_demosaic.yml hgm_6ch "test.checkpoint=$P/cpu_6ch.pth"
  hgm Test_12ch_demoscaicking_pool cpu_demosaic.yml hgm_12ch "test.checkpoint=$P/cpu_12ch_64.pth"
  hgm Test_6ch_demoscaicking_copy_p cpu_demosaic.yml hgm_6ch_p "test.checkpoint=$P/cpu_6ch.pth" \
    "test.progressive.prev_folder=$OUT/hgm_3ch/restored"
  hgm Test_12ch_demoscaicking_pool_p cpu_demosaic.yml hgm_12ch_p "test.checkpoint=$P/cpu_12ch_64.pth" \
    "test.progressive.prev_folder=$OUT/hgm_3ch/restored"
  python scripts/make_table.py bilinear="$OUT/bilinear" malvar="$OUT/malvar" "HGM 3ch"="$OUT/hgm_3ch" \
    "HGM 6ch"="$OUT/hgm_6ch" "HGM 12ch"="$OUT/hgm_12ch" "HGM 6ch progressive"="$OUT/hgm_6ch_p" \
    "HGM 12ch progressive"="$OUT/hgm_12ch_p" | tee "$OUT/table.md" ;;
esac
