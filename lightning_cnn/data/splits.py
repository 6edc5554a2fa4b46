"""The type of a held-out split (``val_split``, ``test_split``): a count of images, or a fraction of them."""

from __future__ import annotations

import contextlib

import yaml
from jsonargparse.typing import register_type


class HeldOutSize:
    """A split held out of the training images: a count (an integer >= 0; 0 holds out none) or a fraction in (0, 1).

    A registered type rather than ``NonNegativeInt | OpenUnitInterval``: that union saves 0.1 as 0 in
    the run's config.yaml (its first member serializes the value), so the saved config would not
    reproduce the run. This one parses either and saves the value as given.
    """

    accepted = "an integer >= 0 or a number in (0, 1)"


def parse_held_out_size(value: object) -> int | float:
    if isinstance(value, str):
        with contextlib.suppress(yaml.YAMLError):  # then it is named as not accepted below
            value = yaml.safe_load(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not {HeldOutSize.accepted}")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and 0 < value < 1:
        return value
    raise ValueError(f"{value!r} is not {HeldOutSize.accepted}")


register_type(HeldOutSize, serializer=lambda value: value, deserializer=parse_held_out_size)
