"""`dsrun.OnDevice(dtype, device="meta", enabled=True)`: DeepSpeed's context for building a model on a device (the
meta device: no memory) and in a dtype. Tensors created inside without an explicit device or dtype get these."""

from __future__ import annotations

import contextlib

import torch


class OnDevice(contextlib.AbstractContextManager):
    def __init__(self, dtype: torch.dtype | None = None, device: str | torch.device = "meta", enabled: bool = True):
        self.dtype = dtype
        self.device = torch.device(device)
        self.enabled = enabled
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        if self.enabled:
            self._stack.enter_context(torch.device(self.device))
            if self.dtype is not None:
                if not self.dtype.is_floating_point:
                    raise TypeError(f"OnDevice dtype must be a floating-point dtype, got {self.dtype}")
                previous = torch.get_default_dtype()
                torch.set_default_dtype(self.dtype)
                self._stack.callback(torch.set_default_dtype, previous)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
