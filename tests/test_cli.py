"""CLI usage errors: exit code 2 and one line naming the value and the fix."""

import pytest

from asc_search.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_data_path(capsys, tmp_path):
    assert main(["--budget", "dcase2022", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in _one_line_error(capsys)


def test_csv_without_filename_column(capsys, tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.wav,x\n")
    assert main(["--data", str(tmp_path / "m.csv"), "--out", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys)
    assert "m.csv" in err and "'filename'" in err
    assert not (tmp_path / "run").exists()


def test_unknown_budget_lists_valid_names(capsys, esc10):
    assert main(["--budget", "dcase2099", "--data", str(esc10)]) == 2
    err = _one_line_error(capsys)
    assert "dcase2099" in err and "dcase2022" in err


def test_bad_option_value_is_one_line(capsys, esc10):
    assert main(["--data", str(esc10), "--trials", "many"]) == 2
    assert "many" in _one_line_error(capsys)


def test_budgets_command(capsys):
    assert main(["budgets"]) == 0
    out = capsys.readouterr().out
    assert "dcase2022: 128,000 INT8 bytes, 30 M MACs per 1 s" in out
    assert "phone: 250 ms per 1 s on phone (estimated)" in out


@pytest.mark.parametrize("flag", ["--help"])
def test_help_has_examples(capsys, flag):
    with pytest.raises(SystemExit) as e:
        main([flag])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize("flag,value", [("--patience", "0"), ("--batch-size", "0"), ("--max-concurrent", "-1"),
                                        ("--deltas", "3"), ("--frontends", "mfcc")])
def test_bad_settings_fail_before_anything_starts(capsys, esc10, tmp_path, flag, value):
    assert main(["--data", str(esc10), flag, value, "--out", str(tmp_path / "run")]) == 2
    assert value in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,expected", [
    (["--kd", "basd", "--kd-alpha", "0.5,1.5"], r"alpha 1.5 is outside [0, 1]"),
    (["--kd", "basd", "--kd-temperature", "0"], "temperature 0.0 must be > 0"),
    (["--prune", "0.5,1"], "pruning ratio 1.0 is outside [0, 1)"),
    (["--kd", "cssd", "--sample-rates-hz", "16000", "--kd-teacher-rate-hz", "8000"],
     "teacher's sample rate 8000 Hz is below the student rate(s) [16000] Hz"),
    (["--augment", "mixup,rotate"], "unknown augmentation(s) ['rotate']"),
    (["--sapaugment"], "--sapaugment scales augmentations"),
    (["--qat", "maybe"], "--qat must be one of off, on, search, got 'maybe'"),
    (["--epoch-choices", "0,10"], "--epoch-choices and --batch-size-choices must be >= 1"),
])
def test_bad_training_settings_are_rejected_at_configuration_time(capsys, esc10, tmp_path, args, expected):
    assert main(["--data", str(esc10), *args, "--out", str(tmp_path / "run")]) == 2
    assert expected in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_cssd_teacher_above_the_native_rate_is_rejected_before_the_search(capsys, esc10, tmp_path):
    # ESC-10 here is 16 kHz: a 44.1 kHz teacher would be upsampled audio
    assert main(["--data", str(esc10), "--kd", "cssd", "--kd-teacher-rate-hz", "44100", "--out",
                 str(tmp_path / "run")]) == 2
    assert "--kd-teacher-rate-hz 44100 is above the data's native rate (16000 Hz)" in _one_line_error(capsys)


def test_short_chunks_are_not_mistaken_for_an_infeasible_space():
    from asc_search.constraints import get_budget
    from asc_search.search import DefineByRunSpace, check_space_has_feasible
    from asc_search.search_spaces import SpaceOptions

    space = DefineByRunSpace(options=SpaceOptions(chunk_s=(0.1,)), budget=get_budget("dcase2022"), n_classes=10)
    check_space_has_feasible(space)  # a 16 ms hop without pooling fits a 0.1 s patch


def test_deploy_adb_without_adb_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb here
    assert main(["deploy", str(tmp_path), "--adb"]) == 2
    assert "adb" in _one_line_error(capsys)


def test_an_out_that_cannot_hold_a_run_is_a_one_line_error(capsys, esc10, tmp_path):
    """--out that is a file, lies under a file, is a folder of something else or holds a run: exit 2, one line
    naming the path, and nothing written."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "img1.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "trials.csv").write_text("trial_id\n")
    cases = {tmp_path / "afile": "is a file", tmp_path / "afile" / "run": "is a file",
             tmp_path / "photos": "folder of something else (img1.jpg)", tmp_path / "old": "already holds a run"}
    for out, expected in cases.items():
        assert main(["--data", str(esc10), "--trials", "1", "--epochs", "1", "--out", str(out)]) == 2, out
        err = _one_line_error(capsys)
        assert str(out) in err and expected in err, err
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["img1.jpg"]
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["trials.csv"]
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_an_unwritable_out_is_a_one_line_error(capsys, esc10, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: there is no unwritable folder to test with")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["--data", str(esc10), "--out", str(locked / "run")]) == 2
    assert "not writable" in _one_line_error(capsys)
