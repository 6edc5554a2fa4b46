"""Per-kind rules of the trace: what a layer's output size, parameter formula, receptive field and FLOPs are.

``module_row`` reads a leaf module's own settings (kernel, stride, padding); ``functional_row`` the
arguments of a functional call. Kinds without a rule keep their input's receptive field and count
no FLOPs (``None``: unknown).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from lightning_cnn.analysis.arithmetic import (
    Field,
    Pair,
    conv_flops,
    conv_parameter_formula,
    linear_flops,
    linear_parameter_formula,
    pair,
    size_formula,
)

# Element-wise layers: FLOPs per output element.
ELEMENTWISE_FLOPS = {
    nn.ReLU: 1, nn.LeakyReLU: 2, nn.ReLU6: 2, nn.ELU: 3, nn.GELU: 8, nn.SiLU: 4, nn.Sigmoid: 4, nn.Tanh: 4,
    nn.Softmax: 3, nn.LogSoftmax: 3, nn.BatchNorm1d: 2, nn.BatchNorm2d: 2, nn.GroupNorm: 4, nn.LayerNorm: 4,
}  # fmt: skip
# Layers that compute nothing: FLOPs 0.
PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Unflatten)
FUNCTION_FLOPS = {"relu": 1, "relu_": 1, "sigmoid": 4, "tanh": 4, "add": 1, "add_": 1, "mul": 1, "softmax": 3,
                  "log_softmax": 3, "gelu": 8, "silu": 4}  # fmt: skip
# Functions that only rearrange or copy elements: FLOPs 0.
RESHAPING_FUNCTIONS = {"view", "reshape", "flatten", "contiguous", "permute", "transpose", "squeeze", "unsqueeze",
                       "dropout", "dropout2d", "clone"}  # fmt: skip
# Positional parameters of the functional windows, after the input.
WINDOW_ARGUMENTS = {
    "conv2d": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode"),
    "linear": ("weight", "bias"),
}


def per_image(tensor: Tensor) -> int:
    """Elements of one image's slice of a batched tensor (computed from the shape: no tensor operation)."""
    return math.prod(tensor.shape[1:]) if tensor.dim() > 1 else 1


def spatial_size(tensor: Any) -> Pair | None:
    """(height, width) of an ``(N, C, H, W)`` tensor, else None."""
    return pair(tuple(tensor.shape[-2:])) if isinstance(tensor, Tensor) and tensor.dim() == 4 else None


def window_values(
    source: Any, output: Tensor, field: Field, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil: bool
) -> dict[str, Any]:
    """Size formula and receptive field of a convolution or pooling window (formula left out if torch differs)."""
    kernel, stride, dilation = pair(kernel), pair(stride or kernel), pair(dilation)
    values: dict[str, Any] = {"field": field.through_window(kernel, stride, dilation)}
    input_size = spatial_size(source)
    if input_size is not None and not isinstance(padding, str):
        formula = size_formula(input_size, kernel, stride, pair(padding), dilation, ceil)
        # A formula that disagrees with the real output (padding modes, odd layers) would mislead: left out.
        if formula.endswith(f"= {output.shape[-1]}") and f"= {output.shape[-2]}" in formula:
            values["size_formula"] = formula
    return values


def module_row(module: nn.Module, source: Any, output: Any, field: Field) -> dict[str, Any]:
    """The row values of one leaf module called on ``source`` (its first input)."""
    if not isinstance(output, Tensor):
        return {"field": field}
    elements = per_image(output)
    if isinstance(module, nn.Conv2d):
        values = window_values(
            source, output, field, module.kernel_size, module.stride, module.padding, module.dilation, False
        )
        values["parameter_formula"] = conv_parameter_formula(
            pair(module.kernel_size), module.in_channels, module.out_channels, module.groups, module.bias is not None
        )
        values["flops"] = conv_flops(pair(module.kernel_size), module.in_channels, module.groups, elements)
        return values
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        dilation = module.dilation if isinstance(module, nn.MaxPool2d) else 1
        values = window_values(
            source, output, field, module.kernel_size, module.stride, module.padding, dilation, module.ceil_mode
        )
        values["flops"] = elements * pair(module.kernel_size)[0] * pair(module.kernel_size)[1]
        return values
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return adaptive_values(source, output, field)
    if isinstance(module, nn.Linear):
        return {
            "field": field.through_linear(),
            "parameter_formula": linear_parameter_formula(
                module.in_features, module.out_features, module.bias is not None
            ),
            "flops": linear_flops(module.in_features, module.out_features),
        }
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.affine:
        flops = elements * ELEMENTWISE_FLOPS[type(module)]
        return {"field": field, "parameter_formula": f"2·{module.num_features} = {2 * module.num_features:,}",
                "flops": flops}  # fmt: skip
    for kind, per_element in ELEMENTWISE_FLOPS.items():
        if isinstance(module, kind):
            return {"field": field, "flops": elements * per_element}
    if isinstance(module, PASS_THROUGH):
        return {"field": reshaped(source, output, field), "flops": 0}
    return {"field": reshaped(source, output, field)}


def adaptive_values(source: Any, output: Tensor, field: Field) -> dict[str, Any]:
    """Adaptive pooling: a window of about input/output elements; to 1×1 it spans the whole map."""
    input_size, output_size = spatial_size(source), spatial_size(output)
    if input_size is None or output_size is None:
        return {"field": field}
    kernel = tuple(-(-n // m) for n, m in zip(input_size, output_size, strict=True))
    stride = tuple(max(n // m, 1) for n, m in zip(input_size, output_size, strict=True))
    values: dict[str, Any] = {
        "field": field.through_window(kernel, stride),
        "flops": per_image(output) * kernel[0] * kernel[1],
    }
    values["size_formula"] = f"adaptive: {input_size[0]}×{input_size[1]} → {output_size[0]}×{output_size[1]}"
    return values


def reshaped(source: Any, output: Any, field: Field) -> Field:
    """A layer of unknown kind: a feature map made flat keeps its field (as a flattening);
    one reduced to one value per channel saw the whole map (as global pooling)."""
    input_size = spatial_size(source)
    if input_size is None or not isinstance(output, Tensor) or output.dim() > 2:
        return field
    if output.numel() == source.numel():
        return field.flattened(input_size)
    return field.through_window(input_size, input_size)


def functional_row(name: str, args: tuple, kwargs: dict, output: Tensor, field: Field) -> dict[str, Any]:
    """The row values of a functional call made outside any layer (``F.max_pool2d(x, 2)``, ``x.view(-1, 320)``)."""
    source = args[0] if args else None
    bound = dict(zip(WINDOW_ARGUMENTS.get(name, ()), args[1:], strict=False)) | kwargs
    elements = per_image(output)
    if name == "conv2d":
        weight, bias, groups = bound["weight"], bound.get("bias"), bound.get("groups", 1)
        kernel = pair(tuple(weight.shape[-2:]))
        in_channels, out_channels = weight.shape[1] * groups, weight.shape[0]
        values = window_values(
            source,
            output,
            field,
            kernel,
            bound.get("stride", 1),
            bound.get("padding", 0),
            bound.get("dilation", 1),
            False,
        )
        values["parameter_formula"] = conv_parameter_formula(
            kernel, in_channels, out_channels, groups, bias is not None
        )
        values["flops"] = conv_flops(kernel, in_channels, groups, elements)
        return values
    if name in ("max_pool2d", "avg_pool2d"):
        kernel = bound["kernel_size"]
        values = window_values(
            source, output, field, kernel, bound.get("stride") or kernel, bound.get("padding", 0),
            bound.get("dilation", 1), bool(bound.get("ceil_mode", False)),
        )  # fmt: skip
        values["flops"] = elements * pair(kernel)[0] * pair(kernel)[1]
        return values
    if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        return adaptive_values(source, output, field)
    if name == "linear":
        weight, bias = bound["weight"], bound.get("bias")
        values = {"field": field.through_linear(), "flops": linear_flops(weight.shape[1], weight.shape[0])}
        values["parameter_formula"] = linear_parameter_formula(weight.shape[1], weight.shape[0], bias is not None)
        return values
    if name in FUNCTION_FLOPS:
        return {"field": field, "flops": elements * FUNCTION_FLOPS[name]}
    if name in RESHAPING_FUNCTIONS:
        return {"field": reshaped(source, output, field), "flops": 0}
    return {"field": reshaped(source, output, field)}
