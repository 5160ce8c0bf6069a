"""A lean forward for PEFT's LoRA ``Linear`` layers on hot pipelines: PEFT's own arithmetic, less its overhead.

On a small denoiser a LoRA job's extra time is PEFT's per-call Python, not arithmetic: each adapted projection
runs ``peft.tuners.lora.layer.Linear.forward`` (argument checks, the variant-kwargs pops, the dropout module,
the dtype cast check, and three module calls through ``nn.Module.__call__`` per adapter).  For the plain case
— not merged, no variant (DoRA, aLoRA, ...), dropout ``Identity``, the input already in the adapter's dtype,
plain ``nn.Linear`` A/B without module hooks, no extra arguments — :func:`lean_forward` issues the very same
tensor operations in the same order (base layer, then per active adapter ``result + B(A(x)) * scaling``, then
``result.to(result_dtype)``), so the output is bit-identical; every other case runs PEFT's forward itself.
Nothing is fused: the adapters stay apart from the shared base weights.

Written against PEFT 0.21 (``peft.tuners.lora.layer.Linear.forward``); ``tests/workers/test_lora_fast.py``
compares the two bit for bit over every wrapped layer of the tiny SD and SDXL, so a PEFT upgrade that changes
the computation fails there.
"""

from __future__ import annotations

from types import MethodType
from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn
from torch.nn import functional
from torch.nn.modules import module as torch_module

#: PEFT's own forward, the fallback for every case the lean one does not cover
PEFT_FORWARD = LoraLinear.forward
#: pipeline components whose modules may hold LoRA layers
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")


def _plain(module: nn.Module | None, cls: type) -> bool:
    """Exactly ``cls``, with none of the hooks ``nn.Module.__call__`` would run (its own fast-path test)."""
    return type(module) is cls and not (
        module._forward_hooks or module._forward_pre_hooks  # type: ignore[union-attr]
        or module._backward_hooks or module._backward_pre_hooks  # type: ignore[union-attr]
    )


def _global_hooks() -> bool:
    """Whether hooks for every module are registered (``register_module_forward_hook`` and kin)."""
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks)


#: one active adapter's term: lora_A's weight and bias, lora_B's weight and bias (tensors; a bias may be None),
#: its scaling (a number, or whatever PEFT holds)
Term = tuple[Any, Any, Any, Any, Any]


def lean_terms(layer: LoraLinear, x: torch.Tensor) -> list[Term] | None:
    """Each active adapter's term in PEFT's loop order; None: PEFT's forward must run.  Reads the ``ModuleDict``s'
    own dicts: their ``__getitem__``/``__contains__`` are Python calls, a few microseconds a layer call."""
    terms: list[Term] = []
    modules = layer._modules
    lora_a, lora_b = modules["lora_A"]._modules, modules["lora_B"]._modules  # type: ignore[union-attr]
    dropouts, variants = modules["lora_dropout"]._modules, layer.lora_variant  # type: ignore[union-attr]
    for name in layer.active_adapters:
        down = lora_a.get(name)
        if down is None:  # PEFT skips an active adapter this layer does not hold
            continue
        up = lora_b.get(name)
        if (name in variants or not _plain(down, nn.Linear) or not _plain(up, nn.Linear)
                or not _plain(dropouts.get(name), nn.Identity)):
            return None
        down_params, up_params = down._parameters, up._parameters  # type: ignore[union-attr]
        weight = down_params["weight"]
        if weight is None or weight.dtype != x.dtype:  # PEFT would cast the input
            return None
        terms.append((weight, down_params["bias"], up_params["weight"], up_params["bias"], layer.scaling[name]))
    return terms


def _base(layer: LoraLinear, x: torch.Tensor) -> torch.Tensor:
    """The wrapped layer's output: for a plain ``nn.Linear``, what its ``__call__`` would run, without the call."""
    base = layer._modules["base_layer"]
    if _plain(base, nn.Linear):
        params = base._parameters  # type: ignore[union-attr]
        return functional.linear(x, params["weight"], params["bias"])  # type: ignore[arg-type]
    return layer.base_layer(x)


def lean_forward(layer: LoraLinear, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """PEFT's ``Linear.forward`` for the plain case, the same operations in the same order; else PEFT's own.

    Two steps are left out where leaving them out is exact: ``* scaling`` when the scaling is 1 (IEEE
    ``v * 1.0 == v``), and ``result.to(result_dtype)`` when the dtype already is that (``to`` returns the
    tensor itself)."""
    if args or kwargs or layer.merged_adapters or _global_hooks():  # adapter_names (mixed batch), variant kwargs
        return PEFT_FORWARD(layer, x, *args, **kwargs)
    if layer.disable_adapters:
        return _base(layer, x)
    terms = lean_terms(layer, x)
    if terms is None:
        return PEFT_FORWARD(layer, x)
    result = _base(layer, x)
    result_dtype = result.dtype
    for down, down_bias, up, up_bias, scaling in terms:  # nn.Linear.forward is functional.linear(x, weight, bias)
        lora = functional.linear(functional.linear(x, down, down_bias), up, up_bias)
        result = result + (lora if type(scaling) in (float, int) and scaling == 1 else lora * scaling)
    return result if result.dtype == result_dtype else result.to(result_dtype)


def install(pipe: Any) -> int:
    """Give every PEFT LoRA ``Linear`` in ``pipe``'s components the lean forward (idempotent; task siblings
    share the modules, so they get it too).  Returns how many layers have it."""
    count = 0
    for layer in lora_layers(pipe):
        if "forward" not in vars(layer):  # something else's forward (e.g. an offload hook) is left alone
            layer.forward = MethodType(lean_forward, layer)  # type: ignore[method-assign]
        count += getattr(vars(layer).get("forward"), "__func__", None) is lean_forward
    return count


def uninstall(pipe: Any) -> None:
    """Back to PEFT's own forward on every LoRA layer of ``pipe`` (for comparisons)."""
    for layer in lora_layers(pipe):
        vars(layer).pop("forward", None)


def lora_layers(pipe: Any) -> list[LoraLinear]:
    """PEFT's LoRA ``Linear`` layers (exactly that class: subclasses such as quantized ones keep their own)."""
    layers = []
    for name in COMPONENTS:
        component = getattr(pipe, name, None)
        if isinstance(component, nn.Module):
            layers += [m for m in component.modules() if type(m) is LoraLinear]
    return layers
