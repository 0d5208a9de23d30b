"""One meaning of --device everywhere: resolve_device and the CLI options that feed it."""

from __future__ import annotations

import inspect
import typing

import pytest
import torch

from saerad.devices import DEVICE_HELP, resolve_device
from saerad.errors import ConfigError


@pytest.fixture
def with_cuda(monkeypatch):
    """Pretend torch sees a GPU (device objects need none; nothing is allocated)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_a_gpu(without_cuda):
    assert resolve_device("auto") == resolve_device(None) == resolve_device() == torch.device("cpu")
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")


def test_auto_is_cuda_with_a_gpu_and_the_launchers_rank(with_cuda):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("cuda:1", local_rank=3) == torch.device("cuda", 1)  # an explicit index wins
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")


def test_explicit_devices_are_taken_literally_and_checked(without_cuda):
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device(name)
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_every_command_offers_the_same_device_option(monkeypatch):
    from typer.testing import CliRunner

    from saerad.cli import DeviceOption, _register, app
    from saerad.service.settings import ServiceSettings

    _register()
    found = {}
    for command in app.registered_commands:
        hints = typing.get_type_hints(command.callback, include_extras=True)
        if "device" in hints:
            found[command.name or command.callback.__name__] = (hints["device"], inspect.signature(command.callback))
    assert {"report", "embed", "train-sae", "build", "evaluate", "train-diffusion", "intervene", "figure"} <= set(found)
    serve = found.pop("serve")
    for name, (hint, signature) in found.items():
        assert hint == DeviceOption, name  # one declaration: same flag, same help text
        assert signature.parameters["device"].default == "auto", name
    usage = CliRunner().invoke(app, ["intervene", "--help"]).output
    assert "--device" in usage and "cuda if available" in usage
    # serve's --device overrides SAERAD_DEVICE, whose default is the same "auto"
    assert serve[1].parameters["device"].default.help.startswith(DEVICE_HELP)
    monkeypatch.delenv("SAERAD_DEVICE", raising=False)
    assert ServiceSettings().device == "auto"
