"""How main.py sets OpenMP's wait policy: spinning threads on a machine of its own, sleeping ones
beside other running processes, and never over a value the user set."""
import main as hgm_main

IDLE = "0.42 0.51 0.60 1/80 12345\n"  # this process is the one running
BUSY = "1.98 1.70 1.20 2/81 12346\n"  # another one runs beside it


def test_other_running_processes_are_seen_in_most_looks():
    assert not hgm_main.others_running([IDLE] * 5)
    assert hgm_main.others_running([BUSY] * 5)
    assert hgm_main.others_running([BUSY, IDLE, BUSY, BUSY, IDLE])
    assert not hgm_main.others_running([BUSY, IDLE, BUSY, IDLE, IDLE])  # a passing process is not a job
    assert not hgm_main.others_running(["", "garbage", "1 2 3", "1 2 3 x/y 5", IDLE])


def test_the_wait_policy_follows_the_machine_and_never_overrides_the_user(monkeypatch):
    for key in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(hgm_main, "others_running", lambda: False)
    assert "spinning" in hgm_main.configure_threads_environment()
    import os
    assert "OMP_WAIT_POLICY" not in os.environ and "KMP_BLOCKTIME" not in os.environ
    monkeypatch.setattr(hgm_main, "others_running", lambda: True)
    assert "PASSIVE" in hgm_main.configure_threads_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ["KMP_BLOCKTIME"] == "0"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "set in the environment" in hgm_main.configure_threads_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
