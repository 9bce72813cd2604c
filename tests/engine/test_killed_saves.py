"""A `sifa train` process killed with SIGKILL at every stage of writing a checkpoint, resumed
each time: every kill leaves a checkpoint that resumes, and the run ends exactly where an
uninterrupted one does."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import torch

from sifa.engine.checkpoint import KILL_AT_VARIABLE, load_training_state, load_weights
from sifa.engine.trainer import train

from training_fixtures import forkserver, run_sifa, tiny_config, write_config

ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_training(config_path, *args: str, kill_at: str | None = None):
    """``sifa train CONFIG ARGS`` in a process of its own (forked by a server that has imported
    torch and sifa, rather than a new interpreter importing them again)."""
    env = dict(ENV)
    if kill_at:
        env[KILL_AT_VARIABLE] = kill_at
    out, err = config_path.with_suffix(".out"), config_path.with_suffix(".err")
    argv = ["train", str(config_path), *args]
    process = forkserver().Process(target=run_sifa, args=(argv, env, out, err))
    process.start()
    process.join(timeout=300)
    if process.exitcode is None:  # still running: stop it, and fail below
        process.kill()
        process.join()
    return SimpleNamespace(returncode=process.exitcode, stdout=out.read_text(),
                           stderr=err.read_text())  # fmt: skip


def checkpoint_update(folder) -> int:
    """The update of ``last``, after checking that its weights and state belong together."""
    _, metadata = load_weights(folder / "last")
    state = load_training_state(folder / "last")  # refuses a state of another update
    return state["update"] if metadata["update"] == str(state["update"]) else -1


def left_behind(folder) -> set[str]:
    kinds = {f"temporary {p.name.split('.')[1]}" for p in folder.iterdir() if p.name[0] == "."}
    if len(list(folder.glob("last.state-*.pt"))) > 1:
        kinds.add("unnamed state")
    return kinds


def test_a_kill_at_any_stage_of_a_save_loses_nothing(tiny_data, tmp_path):
    # 3 updates per epoch, 2 epochs; `last` saved after every update, `best` after epoch 1.
    settings = dict(optim__epochs=2, eval_every=1, checkpoint_every=1, threads=1)
    config = tiny_config(tiny_data, tmp_path / "run", **settings)
    path = write_config(config, tmp_path / "run.yaml")
    folder = tmp_path / "run" / "checkpoints"

    # (where the save is killed, the update of `last` afterwards given the update it resumed
    # from): the N-th save of `last` in a process started at update u is of update u + N.
    kills = [
        ("last:state-written@2", lambda start: start + 1),  # new state not in place yet
        ("last:state-placed@1", lambda start: start),  # new state beside the old pair
        ("best:weights-written@1", lambda start: start + 1),  # epoch 1's end: best, then last
        ("last:weights-written@1", lambda start: start),  # new pair whole, not committed
        ("last:committed@2", lambda start: start + 2),  # committed, old state not removed
    ]
    start, leftovers = 0, set()
    for number, (stage, expected) in enumerate(kills):
        result = run_training(path, *(["--resume"] if number else []), kill_at=stage)
        assert result.returncode == -signal.SIGKILL, (stage, result.stderr[-2000:])
        update = checkpoint_update(folder)
        assert update == expected(start), stage
        leftovers |= left_behind(folder)
        start = update
    # The kills left what a real kill leaves: temporary files and a state file no weights name.
    assert leftovers == {"temporary last", "temporary best", "unnamed state"}

    done = run_training(path, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done: 6 updates" in done.stdout
    # The resume and the saves after it removed every leftover.
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.safetensors", "last.safetensors", "last.state-00000006.pt",
    ]  # fmt: skip

    threads = torch.get_num_threads()
    try:
        train(tiny_config(tiny_data, tmp_path / "reference", **settings))
    finally:
        torch.set_num_threads(threads)
    reference = tmp_path / "reference" / "checkpoints"
    for name in ("last", "best"):
        weights, _ = load_weights(folder / name)
        expected_weights, _ = load_weights(reference / name)
        assert weights.keys() == expected_weights.keys()
        for key, value in expected_weights.items():
            assert torch.equal(weights[key], value), (name, key)
    history = json.loads(load_training_state(folder / "last")["history"])
    assert history == json.loads(load_training_state(reference / "last")["history"])
