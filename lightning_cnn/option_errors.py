"""Command-line and config errors as one line: the option, the value given, and what it accepts.

jsonargparse explains a rejected value as a tree of every type it tried (each union member, each
nested class), often ten lines deep. The option and its value are taken from the command line, and
what is accepted from the option's type hint; the tree is only searched, never read in order.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from jsonargparse import typing as restricted

from lightning_cnn.data.splits import HeldOutSize

# The classes behind each top-level section of a LightningCLI command.
SECTION_CLASSES = {
    "model": "lightning_cnn.module.ImageClassifier",
    "data": "lightning_cnn.data.MNISTDataModule",
    "trainer": "lightning.pytorch.Trainer",
    "checkpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
    "last_checkpoint": "lightning_cnn.callbacks.last_checkpoint.LastCheckpoint",
    "predictions": "lightning_cnn.callbacks.prediction_writer.PredictionWriter",
    "insight": "lightning_cnn.callbacks.dashboard.Dashboard",
    "learning_rate": "lightning_cnn.callbacks.learning_rate.LearningRateLogger",
    "ema": "lightning_cnn.callbacks.weight_averaging.WeightAverage",
}
RESTRICTED = {
    restricted.PositiveInt: "an integer > 0",
    restricted.NonNegativeInt: "an integer >= 0",
    restricted.PositiveFloat: "a number > 0",
    restricted.NonNegativeFloat: "a number >= 0",
    restricted.OpenUnitInterval: "a number in (0, 1)",
    restricted.ClosedUnitInterval: "a number in [0, 1]",
}
PLAIN = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _import(path: str) -> Any:  # noqa: ANN401
    module, _, name = path.rpartition(".")
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _options(owner: Any) -> dict[str, Any]:  # noqa: ANN401
    """The type hints of the options of a class (its ``__init__`` parameters, or a dataclass's fields)."""
    try:
        if dataclasses.is_dataclass(owner):
            return typing.get_type_hints(owner)
        return typing.get_type_hints(owner.__init__)
    except Exception:  # noqa: BLE001 (a hint that cannot be resolved: the error keeps jsonargparse's words)
        return {}


def _members(hint: Any) -> list[Any]:  # noqa: ANN401
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [member for argument in typing.get_args(hint) for member in _members(argument)]
    return [hint]


def option_hint(key: str, class_paths: Sequence[str] = ()) -> Any:  # noqa: ANN401
    """The type hint of a dotted option such as ``data.augmentation.degrees`` (None when unknown).

    ``class_paths`` are classes the value was tried against (``data.class_path`` may name another
    data module than the default); the first whose options contain the next part of the key is used.
    """
    section, *parts = [part for part in key.split(".") if part != "init_args"]
    candidates = [_import(path) for path in class_paths] + [_import(SECTION_CLASSES.get(section, ""))]
    owners = [candidate for candidate in candidates if candidate is not None]
    hint = None
    for part in parts:
        owner = next((owner for owner in owners if part in _options(owner)), None)
        if owner is None:
            return None
        hint = _options(owner)[part]
        owners = [*[m for m in _members(hint) if inspect.isclass(m)], *owners]
    return hint


def describe(hint: Any) -> str:  # noqa: ANN401
    """What a type hint accepts, in words: ``an integer >= 0 or a number in (0, 1)``."""
    literals, words = [], []
    for member in _members(hint):
        if typing.get_origin(member) is Literal:
            literals.extend(repr(value) if isinstance(value, str) else str(value) for value in typing.get_args(member))
        elif member in RESTRICTED:
            words.append(RESTRICTED[member])
        elif member is HeldOutSize:
            words.append(HeldOutSize.accepted)
        elif member in PLAIN:
            words.append(PLAIN[member])
        elif inspect.isclass(member):
            words.append(f"a {member.__name__} (its options as data.<option> or a class_path)")
        else:
            words.append(str(member))
    if literals:
        words.insert(0, f"one of {', '.join(dict.fromkeys(literals))}")
    return " or ".join(dict.fromkeys(words))


def _given_options(argv: Sequence[str]) -> dict[str, str]:
    """``--key value`` and ``--key=value`` pairs of a command line, by key."""
    given, argv = {}, list(argv)
    for index, argument in enumerate(argv):
        if not argument.startswith("--"):
            continue
        key, equals, value = argument[2:].partition("=")
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        given[key.removesuffix("+")] = value
    return given


def one_line(message: str, argv: Sequence[str]) -> str:
    """jsonargparse's message for a rejected value, as one line naming the option, the value and what is accepted."""
    if "\n" not in message.strip():
        return message
    parser_keys = set(re.findall(r'Parser key "([^"]+)"', message))
    class_paths = re.findall(r"class_path[=:]? ?'([\w.]+)'", message)
    unknown = re.findall(r"Option '(\w+)' is not accepted", message)
    if unknown:
        # A misspelt option of a class chosen by class_path (data.*, model.optimizer.init_args.*).
        given = [key for key in _given_options(argv) if key.split(".")[-1] == unknown[0]]
        key = given[0] if given else next(iter(parser_keys), "") + "." + unknown[0]
        owner = f" of {class_paths[0]}" if class_paths else ""
        return f"{key} is not an option{owner}; check its spelling (see --help for the options)"
    # The option given on the command line whose first and last parts the message names.
    matches = [
        (key, value)
        for key, value in _given_options(argv).items()
        if any(key.split(".")[0] == parser_key.split(".")[0] for parser_key in parser_keys)
        and any(key.split(".")[-1] == parser_key.split(".")[-1] for parser_key in parser_keys)
    ]
    if matches:
        key, value = max(matches, key=lambda match: len(match[0]))
        hint = option_hint(key, class_paths)
        if hint is not None:
            return f"{key}={value} is not accepted; use {describe(hint)} (see --help)"
        return f"{key}={value} is not accepted; see --help for what it takes"
    key = _longest_option(parser_keys, class_paths)
    if key is not None:
        value = _config_value(key, argv)
        shown = f"{key}={value}" if value is not None else key
        return f"{shown} in the config is not accepted; use {describe(option_hint(key, class_paths))} (see --help)"
    # Nothing better found: still one line, jsonargparse's words joined.
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _longest_option(parser_keys: set[str], class_paths: Sequence[str]) -> str | None:
    """The longest dotted option that the keys named in the message form and that has a known type hint."""
    found = None
    chains = [key for key in parser_keys if key.split(".")[0] in SECTION_CLASSES]
    while chains:
        chain = chains.pop()
        if found is None or len(chain) > len(found):
            found = chain if "." in chain else found
        # Only chains that still resolve are extended, so the search stays as small as the key tree.
        extended = (f"{chain}.{key}" for key in parser_keys if key not in chain.split("."))
        chains.extend(key for key in extended if option_hint(key, class_paths) is not None)
    return found if found is not None and option_hint(found, class_paths) is not None else None


def _config_value(key: str, argv: Sequence[str]) -> Any:  # noqa: ANN401
    """The value of ``key`` in the last ``--config`` file that sets it, or None."""
    import yaml

    value = None
    for path in (value for flag, value in zip(argv, argv[1:], strict=False) if flag == "--config"):
        try:
            with open(path) as file:
                node = yaml.safe_load(file)
        except (OSError, yaml.YAMLError):
            continue
        for part in key.split("."):
            node = node.get("init_args", node) if isinstance(node, dict) and part not in node else node
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            value = node
    return value
