"""scripts/plot_curve.py on fake metrics.csv folders."""
import os

import pytest
from PIL import Image

from evaluation.report import write_metrics
from scripts import plot_curve


def fake_run(folder, nfe, seconds, psnr):
    os.makedirs(folder)
    write_metrics(str(folder), [{"image": "a", "psnr": psnr, "ssim": 0.9, "nfe": nfe, "seconds": seconds,
                                 "status": "ok"}], True)
    return str(folder)


def test_plot_curve_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    a = [fake_run(tmp_path / f"a{n}", n, n / 10, 30 + n / 50) for n in (21, 101, 26)]
    b = [fake_run(tmp_path / f"b{n}", n, n / 5, 31 + n / 60) for n in (21, 51)]
    out = str(tmp_path / "plots" / "curve.png")
    assert plot_curve.main([f"12ch={','.join(a)}", f"6ch={','.join(b)}", "-o", out, "--title", "t"]) == 0
    im = Image.open(out)
    assert im.format == "PNG" and im.width > 500
    assert [p[0] for p in plot_curve.points(a)] == [21.0, 26.0, 101.0]


def test_plot_curve_user_errors_are_one_line(tmp_path, capsys):
    assert plot_curve.main([f"x={tmp_path / 'missing'}", "-o", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error") and "metrics.csv" in err[0]
