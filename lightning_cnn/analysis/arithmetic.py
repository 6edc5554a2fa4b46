"""The arithmetic the tutorials do by hand, for one layer: output size, parameters, receptive field, FLOPs.

Output size per axis: ``⌊(n − k + 2·p)/s⌋ + 1`` (k the dilated kernel span); parameters of a
convolution: ``(k·k·C_in + 1)·C_out``; receptive field and jump by the standard recurrence
``r' = r + (k − 1)·j``, ``j' = j·s``, starting from ``r = j = 1`` at the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Pair = tuple[int, int]


@dataclass(frozen=True)
class Field:
    """What one element of a tensor sees of the input: receptive field and jump (height, width).

    ``flattened_map`` is the (height, width) of the feature map a flat vector was made from (a
    linear layer over it then spans the whole map); None for feature maps and for plain vectors.
    """

    receptive_field: Pair = (1, 1)
    jump: Pair = (1, 1)
    flattened_map: Pair | None = None

    def through_window(self, kernel: Pair, stride: Pair, dilation: Pair = (1, 1)) -> Field:
        """After a convolution or pooling window: r' = r + d·(k − 1)·j, j' = j·s, per axis."""
        receptive_field = tuple(
            r + d * (k - 1) * j for r, d, k, j in zip(self.receptive_field, dilation, kernel, self.jump, strict=True)
        )
        jump = tuple(j * s for j, s in zip(self.jump, stride, strict=True))
        return Field(receptive_field, jump)

    def flattened(self, map_size: Pair) -> Field:
        """A feature map flattened to a vector: each element still sees what its position saw."""
        return Field(self.receptive_field, self.jump, map_size)

    def through_linear(self) -> Field:
        """A linear layer: over a flattened map it is a window as large as the map, else nothing changes."""
        if self.flattened_map is None:
            return self
        return self.through_window(self.flattened_map, self.flattened_map)

    def widest(self, other: Field) -> Field:
        """Of two inputs (a sum, a concatenation), the one that sees more of the image."""
        return other if other.area > self.area else self

    @property
    def area(self) -> int:
        return self.receptive_field[0] * self.receptive_field[1]


def pair(value: int | tuple[int, ...] | list[int]) -> Pair:
    """An int or a 2-sequence as (height, width)."""
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[-1]))


def window_output(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> int:
    """The output length of a window over ``size`` elements, as torch computes it."""
    span = dilation * (kernel - 1) + 1
    steps = (size - span + 2 * padding) / stride
    out = (math.ceil(steps) if ceil else math.floor(steps)) + 1
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1  # torch drops a last window that would start in the right padding
    return out


def window_formula(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> str:
    """The tutorials' size formula filled in, e.g. ``(28 − 5 + 2·0)/1 + 1 = 24``.

    The floor (or ceiling) is written only when the division is not exact; ``k`` is the span of a
    dilated kernel.
    """
    span = dilation * (kernel - 1) + 1
    numerator = f"{size} − {span} + 2·{padding}"
    if (size - span + 2 * padding) % stride == 0:
        core = f"({numerator})/{stride}"
    elif ceil:
        core = f"⌈({numerator})/{stride}⌉"
    else:
        core = f"⌊({numerator})/{stride}⌋"
    return f"{core} + 1 = {window_output(size, kernel, stride, padding, dilation, ceil)}"


def size_formula(
    input_size: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1), ceil: bool = False
) -> str:
    """One formula when both axes compute alike, else one per axis (``H: …; W: …``)."""
    per_axis = [
        window_formula(n, k, s, p, d, ceil)
        for n, k, s, p, d in zip(input_size, kernel, stride, padding, dilation, strict=True)
    ]
    return per_axis[0] if per_axis[0] == per_axis[1] else f"H: {per_axis[0]}; W: {per_axis[1]}"


def conv_parameter_formula(kernel: Pair, in_channels: int, out_channels: int, groups: int, bias: bool) -> str:
    """``(k·k·C_in + 1)·C_out = N`` (C_in per group), the count a convolution's weights and biases make."""
    per_filter = f"{kernel[0]}·{kernel[1]}·{in_channels // groups}"
    count = (kernel[0] * kernel[1] * (in_channels // groups) + int(bias)) * out_channels
    return f"({per_filter} + 1)·{out_channels} = {count:,}" if bias else f"{per_filter}·{out_channels} = {count:,}"


def linear_parameter_formula(in_features: int, out_features: int, bias: bool) -> str:
    """``(in + 1)·out = N``."""
    count = (in_features + int(bias)) * out_features
    return f"({in_features} + 1)·{out_features} = {count:,}" if bias else f"{in_features}·{out_features} = {count:,}"


def conv_flops(kernel: Pair, in_channels: int, groups: int, output_elements: int) -> int:
    """Two FLOPs (a multiply and an add) per weight per output element."""
    return 2 * kernel[0] * kernel[1] * (in_channels // groups) * output_elements


def linear_flops(in_features: int, out_features: int) -> int:
    return 2 * in_features * out_features


def shape_text(shape: tuple[int, ...]) -> str:
    """``10×24×24``: one image's shape as the tutorials write it."""
    return "×".join(str(size) for size in shape)


def pair_text(values: Pair | None) -> str:
    """``5`` for a square, ``5×3`` otherwise."""
    if values is None:
        return ""
    return str(values[0]) if values[0] == values[1] else f"{values[0]}×{values[1]}"


def byte_text(count: int) -> str:
    """A memory size with a binary unit: ``22.5 KiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"


def count_text(count: int | None) -> str:
    """A large count in SI units (``1.2M``), exact below ten thousand."""
    if count is None:
        return ""
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= 10 * factor or (unit != "k" and count >= factor):
            return f"{count / factor:.1f}{unit}"
    return f"{count:,}"
