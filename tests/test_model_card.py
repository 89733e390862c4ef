"""scripts/export_prior.py --card: the model card of an exported prior is complete and names no path of
the machine it was made on."""
import os


def test_model_card_is_complete(tmp_path):
    import hashlib

    import main as hgm_main
    from scripts import export_prior
    from tests.helpers import write_images
    data = write_images(tmp_path / "my_set", names=("a", "b", "c"), size=(40, 48))
    run = str(tmp_path / "run")
    assert hgm_main.main(["--runner", "train_3ch", "--config", "tiny.yml", "--doc", "d", "--run", run, "--quiet",
                          "--set", f"data.path={data}", "training.n_iters=1"]) == 0
    dst = str(tmp_path / "out" / "p.pth")
    assert export_prior.main([os.path.join(run, "logs", "d", "checkpoint.pth"), dst, "--card",
                              "--data_name", "CBSD432", "--eval", "Kodak24 demosaicking=35.97 dB"]) == 0
    card = open(str(tmp_path / "out" / "p.md")).read()
    assert "An identity prior" in card and "(CBSD432)" not in card and "| data | CBSD432," in card
    assert "research" in card and "## Limitations" in card
    assert "| Kodak24 demosaicking | 35.97 dB |" in card
    with open(dst, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() in card
    assert str(tmp_path) not in card  # no machine-specific path
    # without --eval there is no evaluation section, no placeholder
    assert export_prior.main([os.path.join(run, "logs", "d", "checkpoint.pth"), dst, "--card"]) == 0
    card = open(str(tmp_path / "out" / "p.md")).read()
    assert "## Evaluation" not in card and "| data | my_set," in card and "(not recorded)" in card
    os.environ.pop("TQDM_DISABLE", None)
