"""Checkpoints that can be trusted: safe loading with clear errors, and a check that one fits the model.

``load_checkpoint`` reads a file with weights-only unpickling (no code from the file runs);
``validate_checkpoint`` also checks it against the model it is meant for, name for name and shape
for shape (renaming the zoo's former positional layer names).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_cnn.errors import UserError


class CheckpointError(UserError):
    """A checkpoint file is missing, damaged, not a checkpoint, or belongs to another architecture."""


# Pickle instructions that name a Python global or call one: what code or objects in a pickle need.
_OBJECT_OPCODES = frozenset(
    ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2", "EXT4")
)


def _pickle_names_objects(path: Path) -> bool:
    """Whether the pickle in ``path`` (a torch zip file's ``data.pkl``, or the file itself) imports or calls anything.

    The instructions are only parsed (``pickletools.genops``), never executed; parsing stops at the
    first one that is not valid pickle, so a text or random file reads as naming nothing.
    """
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if name.endswith("data.pkl")]
                if not names:
                    return False
                with archive.open(names[0]) as stream:
                    return any(opcode.name in _OBJECT_OPCODES for opcode, _, _ in pickletools.genops(stream))
        with open(path, "rb") as stream:
            return any(opcode.name in _OBJECT_OPCODES for opcode, _, _ in pickletools.genops(stream))
    except Exception:  # not pickle (or not readable) from the start: it names nothing
        return False


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint with weights-only unpickling.

    Torch's own message for a refused file advises loading it with ``weights_only=False``, which runs
    whatever the file holds; it is never shown. A refused file is named as holding code or objects
    (nothing of it ran), or as not a checkpoint when it is not a pickle at all.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, or holds code or Python
            objects that weights-only loading refuses to build.
    """
    import warnings

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an existing .ckpt file, 'best' or 'last'")
    try:
        with warnings.catch_warnings():
            # Torch's note on a plain pickle's protocol, printed before it refuses the file: noise here.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error) or _pickle_names_objects(path):
            raise CheckpointError(
                f"{path} holds code or Python objects that a checkpoint should not hold, so it was not loaded "
                "(safe loading refused it and nothing in it ran); pass a .ckpt file written by fit (only a file "
                "from a source you trust should ever be loaded any other way)"
            ) from None
        raise CheckpointError(
            f"{path} is not a checkpoint (it is not a file that torch.save writes), so it was not loaded; "
            "pass a .ckpt file written by fit"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, KeyError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "weights_only" in reason:  # never pass on torch's advice to load without weights-only safety
            reason = type(error).__name__
        raise CheckpointError(
            f"{path} is truncated or not a checkpoint ({reason}); pass a complete .ckpt file written by fit "
            "(a run stopped while saving keeps its previous checkpoints)"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (it has no state_dict); pass a .ckpt file written by fit"
        )
    return checkpoint


def rename_positional_keys(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """``state_dict`` with positional names of ``nn.Sequential`` children (``backbone.0.weight``) renamed to
    ``model``'s names for the same positions (``backbone.conv1.weight``).

    The zoo once built its networks as anonymous sequences; their checkpoints still load. Keys that
    do not lead through ``model`` this way are left as they are (the architecture check names them).
    """
    renamed = {}
    for key, value in state_dict.items():
        module, parts = model, key.split(".")
        for index, part in enumerate(parts[:-1]):
            children = dict(module.named_children())
            if part not in children and part.isdigit() and isinstance(module, nn.Sequential):
                names = list(children)
                if int(part) >= len(names):
                    break
                parts[index] = part = names[int(part)]
            if part not in children:
                break
            module = children[part]
        renamed[".".join(parts)] = value
    return renamed


def check_architecture(checkpoint: dict[str, Any], model: nn.Module, path: str | Path) -> None:
    """Raise a CheckpointError unless the checkpoint's weights fit ``model`` name for name and shape for shape."""
    saved = checkpoint["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = sorted(k for k in set(saved) & set(expected) if tuple(saved[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or mismatched):
        return
    saved_backbone = checkpoint.get("hyper_parameters", {}).get("backbone")
    trained_with = ""
    if isinstance(saved_backbone, dict) and "class_path" in saved_backbone:
        trained_with = f" (it was trained with {saved_backbone['class_path']} {saved_backbone.get('init_args', {})})"
    details = []
    if mismatched:
        key = mismatched[0]
        details.append(f"{key} has shape {tuple(saved[key].shape)}, the model expects {tuple(expected[key].shape)}")
    if missing:
        details.append(f"{len(missing)} weights missing, e.g. {missing[0]}")
    if unexpected:
        details.append(f"{len(unexpected)} unknown weights, e.g. {unexpected[0]}")
    raise CheckpointError(
        f"{path} belongs to another architecture{trained_with}: {'; '.join(details)}; "
        "pass the --config (and model options) it was trained with"
    )


def validate_checkpoint(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load ``path`` safely and check that it fits ``model``; returns the checkpoint."""
    checkpoint = load_checkpoint(path)
    checkpoint["state_dict"] = rename_positional_keys(checkpoint["state_dict"], model)
    check_architecture(checkpoint, model, path)
    return checkpoint
