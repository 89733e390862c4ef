"""Evaluation: image-quality metrics (PSNR/CPSNR, SSIM) and the classical
baselines (bilinear, Malvar–He–Cutler, biharmonic) HGM is compared against."""
