"""Model folders and ``hf-hub:`` ids: ``create_model(name, pretrained=...)``, the checks of
``config.json``, and the Hub's failures as one line naming the id. Nothing here reaches the
Hub: ids load from a cache laid out as huggingface_hub lays it out, and the Hub's answers come
from a local stand-in."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import types

import pytest
import torch
from huggingface_hub import constants, scan_cache_dir
from huggingface_hub.utils import _http as hub_http
from safetensors.torch import load_file, save_file

import sifa
from sifa.deploy.publish import publish_run
from sifa.engine.checkpoint import load_model
from sifa.models.errors import CheckpointError
from sifa.models.hub import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    is_model_folder,
    open_model_folder,
    parse_hub_id,
    read_model_folder,
)

from hub_fixtures import lay_out_hub_cache, make_run, random_clips


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """``(run, model folder)``: a small run and its folder as ``sifa publish`` writes it."""
    root = tmp_path_factory.mktemp("hub")
    run = make_run(root / "run")
    publish_run(run, root / "model")
    return run, root / "model"


def edited_copy(folder, destination, edit):
    """A copy of ``folder`` whose ``config.json`` went through ``edit(dict)``."""
    shutil.copytree(folder, destination)
    path = destination / CONFIG_FILE
    written = json.loads(path.read_text())
    edit(written)
    path.write_text(json.dumps(written, indent=2))
    return destination


def assert_equal_models(model, reference):
    reference_state = reference.state_dict()
    assert model.state_dict().keys() == reference_state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference_state[key]), key
    clips = random_clips()
    with torch.no_grad():
        assert torch.equal(model.eval()(clips), reference.eval()(clips))


# ---------------------------------------------------------------------------------------------
# create_model


def test_create_model_from_a_model_folder_is_the_runs_model(published):
    run, folder = published
    model = sifa.create_model("sifa_resnet18", pretrained=folder)
    assert model.training  # a new model, as create_model always gives
    reference, _, _ = load_model(run)
    assert_equal_models(model, reference)


def test_switches_given_must_agree_with_the_folders(published):
    _, folder = published
    stages = ("res3", "res4", "res5")  # the default, a tuple; the folder's JSON has a list
    sifa.create_model(
        "sifa_resnet18", pretrained=folder, base_width=8, num_classes=4, sifa_stages=stages
    )
    with pytest.raises(CheckpointError) as caught:
        sifa.create_model("sifa_resnet18", pretrained=folder, base_width=16)
    assert str(caught.value) == (
        f"switch base_width=16 disagrees with {folder}, whose sifa_resnet18 has base_width=8: "
        "the model is built as the folder says, leave base_width out"
    )
    with pytest.raises(CheckpointError, match=r"^switch num_classes=400 .* num_classes=4:"):
        sifa.create_model("sifa_resnet18", pretrained=folder, num_classes=400)
    with pytest.raises(TypeError, match="sifa_resnet18 has no switch 'widht'"):
        sifa.create_model("sifa_resnet18", pretrained=folder, widht=8)


def test_another_models_name_is_refused(published):
    _, folder = published
    with pytest.raises(CheckpointError) as caught:
        sifa.create_model("c2d_resnet18", pretrained=folder)
    assert str(caught.value) == (
        f"{folder} holds a sifa_resnet18, not a c2d_resnet18: "
        "create_model('sifa_resnet18', pretrained=...)"
    )


def test_a_run_folder_is_no_model_folder(published):
    run, _ = published
    assert not is_model_folder(run)
    with pytest.raises(CheckpointError) as caught:
        sifa.create_model("sifa_resnet18", pretrained=run)
    assert str(caught.value).startswith(f"{run} is not a sifa model folder (config.json and ")
    assert str(caught.value).endswith("or made one with `sifa publish`")
    with pytest.raises(CheckpointError, match=r"^model folder not found: "):
        sifa.create_model("sifa_resnet18", pretrained=run / "nothing")


# ---------------------------------------------------------------------------------------------
# config.json: one source of truth


@pytest.mark.parametrize(
    "key, value",
    [
        ("clip_len", 16),
        ("frame_interval", 2),
        ("sampling", "segment"),
        ("test_crops", 3),
        ("mean", [0.5, 0.5, 0.5]),
        ("switches", {"base_width": 16, "dropout": 0.0}),
        ("model_name", "c2d_resnet18"),
    ],
)
def test_a_readable_key_that_disagrees_with_the_config_is_named(published, tmp_path, key, value):
    _, folder = published
    edited = edited_copy(folder, tmp_path / "edited", lambda written: written.update({key: value}))
    with pytest.raises(CheckpointError) as caught:
        read_model_folder(edited)
    message = str(caught.value)
    assert message.startswith(f"{edited / CONFIG_FILE}: {key} is {value!r} but config.")
    assert "loading uses config." in message and "\n" not in message


def test_an_edit_of_the_config_alone_is_named_too(published, tmp_path):
    _, folder = published

    def edit(written):
        written["config"]["data"]["clip_len"] = 16

    edited = edited_copy(folder, tmp_path / "edited", edit)
    with pytest.raises(CheckpointError, match=r": clip_len is 8 but config\.data\.clip_len is 16;"):
        sifa.create_model("sifa_resnet18", pretrained=edited)


def drop(key):
    return lambda written: written.pop(key)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (drop("sifa_format"), "is not a sifa model's config (no 'sifa_format' key)"),
        (lambda w: w.update(sifa_format="sifa-model-2"),
         "is in format 'sifa-model-2', this sifa reads 'sifa-model-1' (written by a newer sifa?"),
        (lambda w: w.update(num_classes=5), "num_classes is 5 but class_names lists 4 classes"),
        (drop("test_clips"), "lacks the key 'test_clips' (it shows config.data.test_clips)"),
        (lambda w: w["config"]["data"].pop("std"), "lacks config.data.std"),
        (drop("config"), "has no run config (a mapping under 'config')"),
        (lambda w: w.update(class_names="abcd"), "class_names must be a list of names"),
    ],
)  # fmt: skip
def test_other_problems_of_config_json_are_named(published, tmp_path, edit, expected):
    _, folder = published
    edited = edited_copy(folder, tmp_path / "edited", edit)
    with pytest.raises(CheckpointError) as caught:
        read_model_folder(edited)
    assert expected in str(caught.value) and str(edited) in str(caught.value)


def test_missing_or_unfitting_weights_are_named(published, tmp_path):
    _, folder = published
    edited = edited_copy(folder, tmp_path / "edited", lambda written: None)
    weights = load_file(edited / WEIGHTS_FILE)
    del weights["fc.weight"]
    save_file(weights, edited / WEIGHTS_FILE, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not fit sifa_resnet18: "):
        sifa.create_model("sifa_resnet18", pretrained=edited)
    (edited / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"is a sifa model folder without its model\.safe"):
        read_model_folder(edited)
    (edited / CONFIG_FILE).write_text("{not json")
    assert not is_model_folder(edited)
    with pytest.raises(CheckpointError, match=r"config\.json is not readable JSON: "):
        read_model_folder(edited)


# ---------------------------------------------------------------------------------------------
# Hub ids


@pytest.mark.parametrize(
    "source, expected",
    [
        ("hf-hub:org/name", ("org/name", None)),
        ("hf-hub:org/name@v1.0", ("org/name", "v1.0")),
        ("hf-hub:org/name@refs/pr/1", ("org/name", "refs/pr/1")),
        ("hf-hub:gpt2", ("gpt2", None)),
    ],
)
def test_hub_ids_are_parsed(source, expected):
    assert parse_hub_id(source) == expected


@pytest.mark.parametrize(
    "source, expected",
    [
        ("hf-hub:", "hf-hub: is not a Hub model id (hf-hub:ORG/NAME[@REVISION]): "),
        ("hf-hub:org/na me", "hf-hub:org/na me is not a Hub model id (hf-hub:ORG/NAME[@REVISION])"),
        ("hf-hub:a/b/c", "hf-hub:a/b/c is not a Hub model id (hf-hub:ORG/NAME[@REVISION]): "),
        ("hf-hub:org/name@", "hf-hub:org/name@: no revision after '@' (hf-hub:ORG/NAME@REVISION)"),
    ],
)
def test_a_malformed_hub_id_is_named(source, expected):
    with pytest.raises(CheckpointError) as caught:
        parse_hub_id(source)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection or look up a host fails, and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    """An empty Hub cache that huggingface_hub uses (it reads HF_HUB_CACHE and HF_HUB_OFFLINE
    once, at import, into its ``constants``: the constants are what to set in-process)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_a_hub_id_loads_from_the_local_cache_without_the_network(
    published, hub_cache, offline, no_network
):
    _, folder = published
    snapshot = lay_out_hub_cache(hub_cache, "org/tiny-sifa", folder)
    # huggingface_hub sees a complete cached download of the repository in that layout
    (repo,) = scan_cache_dir(hub_cache).repos
    assert repo.repo_id == "org/tiny-sifa" and not scan_cache_dir(hub_cache).warnings
    ((revision,),) = [list(repo.revisions)]
    assert revision.refs == frozenset({"main"})
    assert {file.file_name for file in revision.files} == {p.name for p in folder.iterdir()}

    reference = sifa.create_model("sifa_resnet18", pretrained=folder)
    for source in ("hf-hub:org/tiny-sifa", f"hf-hub:org/tiny-sifa@{snapshot.name}"):
        model = sifa.create_model("sifa_resnet18", pretrained=source)
        assert_equal_models(model, reference)
        assert open_model_folder(source).path == snapshot
    assert no_network == []


def test_a_hub_id_not_in_the_cache_offline_is_one_line_naming_it(hub_cache, offline, no_network):
    with pytest.raises(CheckpointError) as caught:
        sifa.create_model("sifa_resnet18", pretrained="hf-hub:org/absent")
    assert str(caught.value) == (
        f"hf-hub:org/absent is not in the local Hub cache ({hub_cache}) and HF_HUB_OFFLINE is "
        "set: download it once with the network on, or point HF_HUB_CACHE (or HF_HOME) at the "
        "cache that holds it; check the id"
    )
    assert no_network == []


@pytest.fixture
def hub_at(monkeypatch):
    """Point huggingface_hub at another Hub (HF_ENDPOINT, read at import into two constants),
    and let it retry without waiting between tries."""

    def point(url: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        template = url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(hub_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))

    return point


def test_an_unreachable_hub_is_one_line_naming_the_id(hub_cache, hub_at):
    hub_at("http://127.0.0.1:9")  # the discard port: nothing listens there
    with pytest.raises(CheckpointError) as caught:
        sifa.create_model("sifa_resnet18", pretrained="hf-hub:org/name@v1")
    assert str(caught.value) == (
        f"could not reach the Hub (http://127.0.0.1:9) for hf-hub:org/name@v1, and it is not "
        f"in the local cache ({hub_cache}): check the network and the id; if it is cached "
        "elsewhere, point HF_HUB_CACHE there and set HF_HUB_OFFLINE=1"
    )


class RefusingHub(http.server.BaseHTTPRequestHandler):
    """A Hub that answers every request with 404 and the error code the test chose, as the
    Hub says what was not found (the ``X-Error-Code`` header)."""

    error_code = "RepoNotFound"

    def do_HEAD(self):
        self.send_response(404)
        self.send_header("X-Error-Code", self.error_code)
        self.send_header("X-Error-Message", f"{self.error_code} (a test's stand-in Hub)")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_hub(hub_at):
    """``refuse(code)``: a local stand-in Hub answering 404 with ``code``, used from then on."""
    servers = []

    def refuse(code: str) -> None:
        handler = type("Handler", (RefusingHub,), {"error_code": code})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        serve = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        serve.start()
        servers.append(server)
        hub_at(f"http://127.0.0.1:{server.server_address[1]}")

    yield refuse
    for server in servers:
        server.shutdown()
        server.server_close()


# What the Hub did not find (its X-Error-Code) -> the error's text after "hf-hub:org/name@v2: ".
NOT_FOUND = {
    "RepoNotFound": "the Hub has no model repository org/name (or it is private and no token with "
    "access is set: `hf auth login`); check the id",
    "RevisionNotFound": "org/name has no revision 'v2'; check the branch, tag or commit",
    "EntryNotFound": "org/name has no config.json, so it is not a sifa model folder (`sifa "
    "publish` writes them)",
    "GatedRepo": "org/name is gated: accept its terms on the Hub, then `hf auth login`",
}


@pytest.mark.parametrize("code", NOT_FOUND)
def test_what_the_hub_did_not_find_is_one_line_naming_the_id(hub_cache, refusing_hub, code):
    refusing_hub(code)
    with pytest.raises(CheckpointError) as caught:
        open_model_folder("hf-hub:org/name@v2")
    assert str(caught.value) == f"hf-hub:org/name@v2: {NOT_FOUND[code]}"
