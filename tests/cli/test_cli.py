"""The `sifa` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import sifa
from sifa.cli import main, parse_switches

from video_fixtures import indexed_frames, write_mp4


def test_models_lists_the_registry(capsys):
    assert main(["models", "sifa_*"]) == 0
    out = capsys.readouterr().out
    assert "sifa_resnet50" in out and "the paper's main network" in out
    assert "c2d_resnet50" not in out
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(sifa.list_models())
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # every model described


def test_flops_text_compares_with_the_paper(capsys):
    assert main(["flops", "sifa_resnet50", "--frames", "16", "--size", "224"]) == 0
    out = capsys.readouterr().out
    assert "GMACs/view   23.89   (paper: 25, -4.4%)" in out
    assert "parameters   43.04 M" in out


def test_flops_of_the_sifa_transformer_with_a_frame_interval(capsys):
    args = ["flops", "sifa_swin_b", "--frames", "64", "--frame-interval", "2", "--size", "224"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "frames 2 apart: 127 frames of video" in out
    assert "(paper: 270, +4.6%)" in out
    assert "(added: SIFA 0.99 M, temporal conv 10.48 M)" in out
    assert "temporal conv 29.595 GMACs" in out


def test_flops_json_with_switches(capsys):
    args = ["flops", "sifa_resnet18", "--frames", "8", "--size", "64", "--json"]
    assert main([*args, "dual_head=false", "sifa_stages=[res5]"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["switches"] == {"dual_head": False, "sifa_stages": ["res5"]}
    assert report["frames"] == 8 and report["gmacs"] > 0 and "layer4_dual" not in report["parts"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["flops", "sifa_resnet50", "foo=1"], "sifa_resnet50 has no switch 'foo'"),
        (["flops", "nope"], "unknown model 'nope'"),
        (["flops", "sifa_resnet50", "--frames", "10"], "T=10 must be a positive multiple"),
        (["flops", "sifa_resnet50", "dual_head"], "expected a model switch as key=value"),
        (["flops", "swin_t", "--frame-interval", "0"], "--frame-interval must be at least 1"),
        (["flops", "sifa_swin_t", "--frames", "6"], "T=6 must be a positive multiple"),
    ],
)
def test_errors_are_one_line_messages(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sifa {args[0]}: error: ") and message in err
    assert "Traceback" not in err


def test_parse_switches_reads_yaml_values():
    assert parse_switches(["a=1", "b=0.5", "c=true", "d=1/C", "e=[x, y]"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "1/C",
        "e": ["x", "y"],
    }


def test_console_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "sifa", "flops", "c2d_resnet18", "--frames", "4", "--size", "32"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "GMACs/view" in result.stdout


def test_check_data_lists_unreadable_files(tmp_path, capsys):
    write_mp4(tmp_path / "good.mp4", indexed_frames(8, 32, 32))
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "list.txt").write_text("good.mp4 0\nempty.mp4 1\nmissing.mp4 0\n")
    assert main(["check-data", str(tmp_path / "list.txt"), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "dataset: 3 videos checked, 2 unreadable" in out
    assert f"{tmp_path / 'empty.mp4'}: the file is empty" in out
    assert f"{tmp_path / 'missing.mp4'}: no such file" in out


def test_check_data_reads_a_config(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    write_mp4(tmp_path / "run" / "a.mp4", indexed_frames(8, 32, 32))
    (tmp_path / "config.yaml").write_text(
        f"data:\n  train:\n    format: folder\n    root: {tmp_path}\n    batch_size: 4\n"
    )
    assert main(["check-data", str(tmp_path / "config.yaml"), "--quiet"]) == 0
    assert "train: 1 videos checked, all readable" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("data:\n  train:\n    root: x\n")
    assert main(["check-data", str(tmp_path / "bad.yaml"), "--quiet"]) == 2
    assert "no dataset found" in capsys.readouterr().err


def test_a_malformed_config_is_one_line_naming_the_file_and_the_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: [0.1\nmodel: x\n")
    for command in ("train", "check-data"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sifa {command}: error: {path}: not valid YAML: ")
        assert "',' or ']'" in err and err.endswith(" at line 3, column 6\n")
        assert err.count("\n") == 1


def test_a_checkpoint_whose_config_builds_objects_is_one_line(tmp_path, capsys):
    from sifa.engine.checkpoint import save_checkpoint

    marker = tmp_path / "code_ran"
    model = sifa.create_model("c2d_resnet18", num_classes=2, base_width=8)
    evil = f"model: !!python/object/apply:os.system ['touch {marker}']\n"
    save_checkpoint(tmp_path, "evil", model, config_yaml=evil, class_names=["a", "b"], update=1)
    args = ["predict", str(tmp_path / "clip.mp4"), "--checkpoint", str(tmp_path / "evil")]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"sifa predict: error: the config stored in {tmp_path / 'evil.safetensors'}: not valid "
        "YAML: could not determine a constructor for the tag"
    )
    assert not marker.exists()


def test_a_video_error_in_a_dataloader_worker_is_one_line(tiny_data, tmp_path, capsys):
    from training_fixtures import tiny_config, write_config

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    lines = (tiny_data / "train.txt").read_text().splitlines()
    (tmp_path / "train.txt").write_text("\n".join([f"{broken} 0", *lines]) + "\n")
    config = tiny_config(tiny_data, tmp_path / "run", data__on_error="raise",
                         data__num_workers=2, eval_every=0)  # fmt: skip
    config.data.train.annotations = str(tmp_path / "train.txt")
    assert main(["train", str(write_config(config, tmp_path / "run.yaml"))]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith(f"sifa train: error: {broken}: ")
    assert "Traceback" not in err and "Caught" not in err


def test_every_command_and_option_has_help_text():
    import argparse

    from sifa.cli import build_parser

    def parsers(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{path} {choice.dest}: no help"
                for name, sub in action.choices.items():
                    yield from parsers(sub, f"{path} {name}")

    for path, parser in parsers(build_parser(), "sifa"):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{path} {'/'.join(action.option_strings) or action.dest}"
        # argparse %-formats option help but prints descriptions verbatim
        assert "%%" not in parser.format_help(), f"{path}: a doubled % in its help"


def test_run_folders_are_not_tracked():
    from pathlib import Path

    ignored = (Path(__file__).parents[2] / ".gitignore").read_text().split()
    assert "runs/" in ignored


def test_ctrl_c_is_one_line_and_exit_status_130(monkeypatch, capsys):
    """Ctrl-C in a command that does not handle it itself (here while the model is built)."""
    import sifa.models.complexity

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sifa.models.complexity, "model_complexity", interrupted)
    assert main(["flops", "sifa_resnet50"]) == 130
    err = capsys.readouterr().err
    assert err == "sifa flops: interrupted\n"


def test_sigterm_is_one_line_and_exit_status_143(monkeypatch, capsys):
    """A real SIGTERM to this process while a command runs: the command's handler turns it
    into the same clean stop as Ctrl-C, and the default action is back afterwards."""
    import signal

    import sifa.models.complexity

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def terminated(*args, **kwargs):
        # Never send SIGTERM to the test process without the command's handler in place.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sifa.models.complexity, "model_complexity", terminated)
    assert main(["flops", "sifa_resnet50"]) == 143
    assert capsys.readouterr().err == "sifa flops: terminated (SIGTERM)\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["flops"], ["input frames per clip (default: 16)",
                     "input height and width (default: 224)"]),
        (["visualize"], ["the most salient positions (default: 4)",
                         "drawn in the PNG (default: 0)"]),
        (["make-synthetic"], ["training videos (default: 100)", "class pairs, 1 to 4 (default: 4)",
                              "the same seed, the same videos (default: 0)"]),
        (["benchmark", "models"], ["frames per clip (default: 16)"]),
    ],
)  # fmt: skip
def test_help_gives_every_default(command, shown, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for phrase in shown:
        assert phrase in text
    assert "(default: None)" not in text and "(default: False)" not in text
