"""Traces one image through any ``nn.Module`` and records a row per layer, as the tutorials tabulate by hand.

Layers are the leaf modules the forward pass calls (a module called twice gives two rows) and the
functional operations a ``forward`` applies itself (``F.max_pool2d``, ``x.view``), seen through
forward hooks and a :class:`~torch.overrides.TorchFunctionMode`. The receptive field follows each
tensor, so it is exact for a chain of layers; where branches meet, the wider branch counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lightning_cnn.analysis.arithmetic import Field, Pair
from lightning_cnn.analysis.layer_rules import functional_row, module_row, per_image
from lightning_cnn.errors import UserError

# Functions that read a tensor's metadata or copy it without computing anything a reader would count.
QUIET_FUNCTIONS = {"__get__", "size", "dim", "numel", "__len__", "is_floating_point", "type", "__format__", "item"}


class UntraceableNetworkError(UserError):
    """The network cannot take the example input (wrong image size or channels, or a failing forward)."""


@dataclass
class LayerRow:
    """One layer of the trace, for one image."""

    layer: str
    type: str
    output_shape: tuple[int, ...]
    parameters: int
    field: Field | None
    size_formula: str = ""
    parameter_formula: str = ""
    flops: int | None = None
    activation_bytes: int = 0

    def record(self) -> dict[str, Any]:
        """The JSON record: ``layer``, ``type``, ``output_shape``, ``parameters``, ``receptive_field``, ``jump``,
        ``flops``, and the formulas and activation bytes. A field is an int when square, else [height, width]."""

        def square_or_pair(values: Pair | None) -> int | list[int] | None:
            if values is None:
                return None
            return values[0] if values[0] == values[1] else list(values)

        return {
            "layer": self.layer,
            "type": self.type,
            "output_shape": list(self.output_shape),
            "parameters": self.parameters,
            "receptive_field": square_or_pair(self.field.receptive_field if self.field else None),
            "jump": square_or_pair(self.field.jump if self.field else None),
            "flops": self.flops,
            "size_formula": self.size_formula,
            "parameter_formula": self.parameter_formula,
            "activation_bytes": self.activation_bytes,
        }


@dataclass
class Trace:
    """The rows of one traced network, with its input shape and totals."""

    network: str
    input_shape: tuple[int, ...]
    rows: list[LayerRow]
    total_parameters: int

    @property
    def total_flops(self) -> int:
        return sum(row.flops or 0 for row in self.rows)

    @property
    def total_activation_bytes(self) -> int:
        return sum(row.activation_bytes for row in self.rows)

    def spatial_sizes(self) -> str:
        """The chain of feature-map sizes, as the tutorials write it: ``28 → 24 → 12 → 8 → 4, flatten 320``."""
        sizes = [self.input_shape[-1]] if len(self.input_shape) == 3 else []
        text, flattened = "", None
        for row in self.rows:
            if len(row.output_shape) == 3 and (not sizes or row.output_shape[-1] != sizes[-1]):
                sizes.append(row.output_shape[-1])
            elif len(row.output_shape) == 1 and flattened is None and sizes:
                flattened = row.output_shape[0]
        text = " → ".join(str(size) for size in sizes)
        return f"{text}, flatten {flattened}" if flattened is not None else text


class _Tracer(TorchFunctionMode):
    """Records rows for leaf modules (by hooks) and for functional operations outside them (by this mode)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.names = {module: name for name, module in network.named_modules()}
        self.fields: dict[int, Field] = {}  # id of a tensor made during the trace -> what it sees
        self.keep_alive: list[Tensor] = []  # so that no id is reused while the trace runs
        self.rows: list[LayerRow] = []
        self.calls: dict[str, int] = {}
        self.inside_leaf = 0
        self.counted_parameters: set[int] = set()
        self.last_field = Field()
        self.network = network

    def field_of(self, tensor: Any) -> Field:
        return self.fields.get(id(tensor), self.last_field) if isinstance(tensor, Tensor) else self.last_field

    def remember(self, output: Any, field: Field) -> None:
        if isinstance(output, Tensor):
            self.fields[id(output)] = field
            self.keep_alive.append(output)
            self.last_field = field

    def row_name(self, name: str) -> str:
        """The layer's name, numbered from its second call (a shared ReLU or pooling)."""
        self.calls[name] = self.calls.get(name, 0) + 1
        return name if self.calls[name] == 1 else f"{name} #{self.calls[name]}"

    def new_parameters(self, tensors: list[Any]) -> int:
        """Parameters among ``tensors`` not yet counted in an earlier row."""
        count = 0
        for tensor in tensors:
            if isinstance(tensor, nn.Parameter) and tensor.requires_grad and id(tensor) not in self.counted_parameters:
                self.counted_parameters.add(id(tensor))
                count += tensor.numel()
        return count

    def add_row(self, name: str, type_name: str, output: Any, values: dict[str, Any]) -> None:
        if not isinstance(output, Tensor):
            return
        field = values.pop("field", None)
        self.remember(output, field or self.last_field)
        self.rows.append(
            LayerRow(
                layer=self.row_name(name),
                type=type_name,
                output_shape=tuple(output.shape[1:]),
                field=field,
                activation_bytes=per_image(output) * output.element_size(),
                **values,
            )
        )

    # Module hooks: a leaf module of a known kind is one row; what it calls inside is not traced further.
    def before_module(self, module: nn.Module, args: tuple) -> None:
        if self.is_layer(module):
            self.inside_leaf += 1

    def is_layer(self, module: nn.Module) -> bool:
        # A network with no submodules is traced by its functional operations instead.
        return module is not self.network and next(module.children(), None) is None

    def after_module(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self.is_layer(module):
            return
        source = args[0] if args else None
        values = module_row(module, source, output, self.field_of(source))
        values["parameters"] = self.new_parameters(list(module.parameters(recurse=False)))
        self.add_row(self.names.get(module, type(module).__name__), type(module).__name__, output, values)
        self.inside_leaf -= 1  # only now: what the row computes above is not a layer of the network

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if self.inside_leaf or name in QUIET_FUNCTIONS or not isinstance(output, Tensor):
            return output
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, Tensor)]
        if not tensors or output.dim() == 0:
            return output
        field = self.field_of(tensors[0])
        for other in tensors[1:]:
            if id(other) in self.fields:
                field = field.widest(self.fields[id(other)])
        values = functional_row(name.strip("_"), args, kwargs, output, field)
        values["parameters"] = self.new_parameters(tensors)
        self.add_row(name.strip("_"), "function", output, values)
        return output


def trace_network(network: nn.Module, input_shape: tuple[int, ...]) -> Trace:
    """The rows of ``network`` for one image of ``input_shape`` (channels, height, width), in evaluation mode.

    Raises:
        UntraceableNetworkError: the network fails on an input of that shape.
    """
    tracer = _Tracer(network)
    parameter = next(network.parameters(), None)
    example = torch.zeros(1, *input_shape, device=parameter.device if parameter is not None else "cpu")
    handles = []
    for module in network.modules():
        handles.append(module.register_forward_pre_hook(tracer.before_module))
        handles.append(module.register_forward_hook(tracer.after_module))
    was_training = network.training
    network.eval()  # batch norm would otherwise update its statistics, dropout zero random maps
    tracer.remember(example, Field())
    try:
        with torch.no_grad(), tracer:
            network(example)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UntraceableNetworkError(
            f"model.backbone {type(network).__name__} cannot take images of shape {tuple(input_shape)} ({reason}); "
            "choose a network built for this data's image size and channels"
        ) from None
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
    total = sum(p.numel() for p in network.parameters() if p.requires_grad)
    return Trace(type(network).__name__, tuple(input_shape), tracer.rows, total)
