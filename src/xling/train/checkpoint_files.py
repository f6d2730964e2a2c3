"""What a checkpoint directory's files hold, and how they are encoded and read (`RunDir` decides where they go).

    model.safetensors    the weights (all that eval, sample and the analyses read)
    training.safetensors optimiser state tensors and the torch RNG state (resume only)
    training.json        step, optimiser param groups, loss-scaler state (resume only)
    manifest.json        format, step, the run's config, a SHA-256 per file; "stop": true where training was stopped

Checkpoint files hold data only (safetensors, JSON): a run directory received from someone else cannot run code.
Format 1 (no "format" in the manifest) kept training state in state.pt, a pickle, which this version never reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import XlingError, first_line
from ..fsio import read_json

CHECKPOINT_FORMAT = 2
# What a manifest may checksum (format 1's state.pt is never read).
CHECKPOINT_FILES = ("model.safetensors", "training.safetensors", "training.json", "state.pt")

# PyTorch and safetensors are imported where tensors are read or written: reading a run's JSON
# (Run.info, xling study status) should not wait for PyTorch to load.
if TYPE_CHECKING:
    import torch


def checkpoint_step(checkpoint: Path) -> int:
    """The training step of a checkpoint directory (step_0000200 -> 200)."""
    return int(checkpoint.name.removeprefix("step_"))


def checkpoint_files(step: int, model: torch.nn.Module, training: dict, config: dict, stop: bool) -> dict[str, bytes]:
    """Every file of a checkpoint, by name, as bytes: the weights, the training state, and the manifest that
    checksums them (`training` as `RunDir.save_checkpoint` takes it; `config` the run's, as a dict)."""
    from safetensors.torch import save as safetensors_bytes

    files = {"model.safetensors": safetensors_bytes(_cpu(model.state_dict())), **_encode_training(training)}
    manifest = {"format": CHECKPOINT_FORMAT, "step": step, **({"stop": True} if stop else {}),
                "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                "config": config}
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    return files


def stored_parameters(ckpt: Path) -> int:
    """How many numbers a checkpoint's model.safetensors holds, from its header alone (nothing is loaded)."""
    import math

    from safetensors import safe_open

    path = ckpt / "model.safetensors"
    try:
        with safe_open(str(path), "pt") as weights:
            return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    except Exception as exc:  # safetensors' SafetensorError, an OSError of a bad header
        raise _unreadable(path, exc) from None


def load_weights(ckpt: Path, model: torch.nn.Module, map_location="cpu") -> None:
    """Load a checkpoint's model.safetensors into `model` (nothing else is read)."""
    weights = _read_safetensors(ckpt / "model.safetensors", device=str(map_location))
    expected = model.state_dict()
    # load_state_dict casts silently: a crafted file of integers would be scored as the run's weights.
    cast = next((name for name, tensor in weights.items()
                 if name in expected and tensor.dtype != expected[name].dtype), None)
    if cast:
        raise XlingError(f"checkpoint {ckpt} holds {cast} as {weights[cast].dtype}, not the model's "
                         f"{expected[cast].dtype}: it was not written by xling; restore the run from a copy")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise XlingError(f"checkpoint {ckpt} does not match the run's model config ({first_line(exc)})") from None


def load_training(ckpt: Path) -> dict:
    """A checkpoint's training state, as `RunDir.save_checkpoint` was given it (tensors on the CPU:
    optimizer.load_state_dict moves them to the parameters' device)."""
    meta = read_json(ckpt / "training.json")
    tensors = _read_safetensors(ckpt / "training.safetensors")
    state = {int(pid): dict(values) for pid, values in meta["optimizer_values"].items()}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = tensor
    # JSON turned the groups' tuples (Adam's betas) into lists; "params" is the only real list.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
              for group in meta["param_groups"]]
    return {"step": meta["step"], "optimizer": {"state": state, "param_groups": groups},
            "scaler": meta["scaler"], "torch_rng": tensors["torch_rng"]}


def restore_training(ckpt: Path, optimizer, scaler) -> int:
    """Load a checkpoint's training state into the optimiser, the loss scaler and torch's RNG; returns its step. A
    state that is not what xling writes (a received run's crafted training.json, say) is one line."""
    import torch

    try:
        state = load_training(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] or not scaler.is_enabled():  # (a run that goes on in fp16 from another precision: a fresh one)
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise XlingError(f"the training state in {ckpt} is not one xling wrote ({type(exc).__name__}: "
                         f"{first_line(exc)[:120]}): resume from a copy of the run, or start it again") from None
    if state["step"] != checkpoint_step(ckpt):
        raise XlingError(f"the training state in {ckpt} is of step {state['step']!r}, not {checkpoint_step(ckpt)}: "
                         "resume from a copy of the run, or start it again")
    return state["step"]


def _read_safetensors(path: Path, device: str = "cpu") -> dict:
    """A checkpoint's safetensors file; one that is not (a crafted file whose checksum was made to match) is one
    line, not the library's error."""
    from safetensors.torch import load_file

    try:
        return load_file(path, device=device)
    except Exception as exc:  # safetensors' SafetensorError, an OSError of a bad header
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> XlingError:
    return XlingError(f"{path} is not a safetensors file xling can read ({first_line(exc)}): restore the run from a "
                      "copy")


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def _encode_training(training: dict) -> dict[str, bytes]:
    """training.safetensors (every tensor: optimiser state as optimizer.<param>.<key>, torch_rng)
    and training.json (the rest); `load_training` reverses it."""
    import torch
    from safetensors.torch import save as safetensors_bytes

    tensors, values = {"torch_rng": training["torch_rng"]}, {}
    for pid, entries in training["optimizer"]["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                values.setdefault(str(pid), {})[key] = value
    meta = {"step": training["step"], "param_groups": training["optimizer"]["param_groups"],
            "optimizer_values": values, "scaler": training["scaler"]}
    return {"training.safetensors": safetensors_bytes(_cpu(tensors)),
            "training.json": (json.dumps(meta, indent=2) + "\n").encode("utf-8")}
