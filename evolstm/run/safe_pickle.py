"""Pickling library objects (EvoTorch searchers) into data, and back without running code.

EvoTorch's searchers have no ``state_dict``: their state is spread over the searcher, its
problem, distribution, optimiser and population objects. Writing a converter for each of
them by hand would copy EvoTorch's internals; pickling them whole is what EvoTorch itself
does, but ``pickle.loads`` runs whatever the file names. So:

* :func:`dumps` pickles ``obj`` with every tensor, numpy array, torch generator/device/dtype
  and bound method taken *out* of the pickle (``persistent_id``): tensors go into a list
  of plain tensors, the rest into small tuples of data. The result is a dict of a
  ``uint8`` tensor and a list of tensors, which ``torch.load(weights_only=True)`` loads.
* :func:`loads` reads it back with a restricted unpickler: a global must be on an explicit
  allowlist of classes (which it may only *instantiate without calling*: ``NEWOBJ`` +
  ``BUILD``, i.e. ``cls.__new__`` and a ``__dict__``/``__setstate__`` update) or on a short
  list of harmless callables (``OrderedDict``, ``slice``, ...). Everything else -- any other
  global, calling a class, protocol 0/1 instance opcodes -- raises :class:`UnsafePickleError`.
  ``getattr`` (which pickle uses for bound methods, and which reaches any function through
  ``__globals__``) never appears: bound methods are rebuilt from ``(object, name)``, and
  ``"module.Class.method"`` must be on the allowlist too.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import io
import pickle
from collections.abc import Collection
from typing import Any

import numpy as np
import torch

from evolstm import current_module_name

#: Callables the unpickler may call (``REDUCE``); none of them reaches code or files.
SAFE_CALLABLES: frozenset[str] = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.complex",
        "collections.OrderedDict",
        "collections.defaultdict",
        "datetime.datetime",
        "datetime.timedelta",
    }
)
PICKLE_KEY, TENSORS_KEY = "pickle", "tensors"


class UnsafePickleError(pickle.UnpicklingError):
    """The data names something outside the allowlist (or is not a pickle at all)."""


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


class _DataPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=4)
        self.tensors: list[torch.Tensor] = []
        self._index: dict[int, int] = {}
        self._keep: list[Any] = []  # holds the originals so their ids stay unique while dumping

    def _tensor_index(self, t: torch.Tensor, keep_alive: Any) -> int:
        key = id(keep_alive)
        if key not in self._index:
            self._index[key] = len(self.tensors)
            self.tensors.append(t)
            self._keep.append(keep_alive)
        return self._index[key]

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            plain = obj.detach().as_subclass(torch.Tensor) if type(obj) is not torch.Tensor else obj
            subclass = None if type(obj) is torch.Tensor else _qualname(type(obj))
            return ("tensor", self._tensor_index(plain.detach(), obj), subclass, obj.requires_grad)
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                raise pickle.PicklingError("numpy object arrays are not data")
            return ("ndarray", self._tensor_index(torch.from_numpy(obj.copy()), obj))
        if isinstance(obj, np.generic):
            return ("npscalar", obj.dtype.str, obj.item())
        if isinstance(obj, np.dtype):
            return ("npdtype", obj.str)
        if isinstance(obj, torch.Generator):
            state = self._tensor_index(obj.get_state(), obj)
            return ("generator", str(obj.device), state)
        if isinstance(obj, torch.device):
            return ("device", str(obj))
        if isinstance(obj, torch.dtype):
            return ("dtype", str(obj).removeprefix("torch."))
        if hasattr(obj, "__self__") and hasattr(obj, "__func__"):  # a bound method
            return ("method", obj.__self__, obj.__func__.__name__)
        return None


def dumps(obj: Any) -> dict[str, Any]:
    """``obj`` as ``{"pickle": uint8 tensor, "tensors": [tensor, ...]}`` (see the module doc)."""
    buffer = io.BytesIO()
    pickler = _DataPickler(buffer)
    pickler.dump(obj)
    blob = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    # A snapshot: deepcopy keeps views of one storage sharing it, as in the original.
    return {PICKLE_KEY: blob, TENSORS_KEY: copy.deepcopy(pickler.tensors)}


def _resolve(qualname: str) -> Any:
    module_name, _, name = qualname.rpartition(".")
    parts: list[str] = []
    while module_name:
        try:
            obj: Any = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            parts.insert(0, head)
    else:
        raise UnsafePickleError(f"cannot import {qualname}")
    for part in [*parts, name]:
        obj = getattr(obj, part)
    return obj


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python one: its opcodes can be guarded
    def __init__(
        self, data: bytes, tensors: list[torch.Tensor], allowed_classes: Collection[str]
    ) -> None:
        super().__init__(io.BytesIO(data))
        self.tensors = tensors
        self.allowed_classes = frozenset(allowed_classes)
        self._objects: dict[int, Any] = {}
        self._classes: set[int] = set()
        self._callables: set[int] = set()
        dispatch = dict(pickle._Unpickler.dispatch)
        for op in (pickle.INST, pickle.OBJ):
            dispatch[op[0]] = _refuse_opcode
        dispatch[pickle.REDUCE[0]] = _RestrictedUnpickler._load_reduce
        dispatch[pickle.NEWOBJ[0]] = _RestrictedUnpickler._load_newobj
        dispatch[pickle.NEWOBJ_EX[0]] = _RestrictedUnpickler._load_newobj_ex
        dispatch[pickle.BUILD[0]] = _RestrictedUnpickler._load_build
        self.dispatch = dispatch
        #: every allowlisted name this unpickler resolved (what the data actually used)
        self.resolved: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        qualname = f"{current_module_name(module)}.{name}"
        if qualname in SAFE_CALLABLES:
            self.resolved.add(qualname)
            obj = _resolve(qualname)
            self._callables.add(id(obj))
            return obj
        if qualname in self.allowed_classes:
            self.resolved.add(qualname)
            obj = _resolve(qualname)
            self._classes.add(id(obj))
            return obj
        raise UnsafePickleError(f"global {qualname!r} is not on the allowlist")

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self._callables or not isinstance(args, tuple):
            raise UnsafePickleError(f"calling {func!r} is not allowed")
        self.stack[-1] = func(*args)

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if not isinstance(cls, type) or id(cls) not in self._classes | self._callables:
            raise UnsafePickleError(f"instantiating {cls!r} is not allowed")
        return cls.__new__(cls, *args, **kwargs)

    def _load_build(self) -> None:
        inst = self.stack[-1]
        kind = type(inst)
        if isinstance(inst, type) or not (
            id(kind) in self._classes | self._callables
            or issubclass(kind, torch.Tensor | dict | list | set)
        ):
            raise UnsafePickleError(f"setting the state of {kind!r} is not allowed")
        pickle._Unpickler.load_build(self)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or not isinstance(pid[0], str):
            raise UnsafePickleError(f"unknown persistent id {pid!r}")
        kind = pid[0]
        if kind in ("tensor", "ndarray", "generator"):
            key = (kind, pid[1] if kind != "generator" else pid[2])
            if key not in self._objects:
                self._objects[key] = self._rebuild(pid)
            return self._objects[key]
        if kind == "npscalar":
            return np.dtype(pid[1]).type(pid[2])
        if kind == "npdtype":
            return np.dtype(pid[1])
        if kind == "device":
            return torch.device(pid[1])
        if kind == "dtype":
            dtype = getattr(torch, pid[1], None)
            if not isinstance(dtype, torch.dtype):
                raise UnsafePickleError(f"unknown torch dtype {pid[1]!r}")
            return dtype
        if kind == "method":
            owner, name = pid[1], pid[2]
            if not isinstance(name, str) or name.startswith("__") or not name.isidentifier():
                raise UnsafePickleError(f"method name {name!r} is not allowed")
            qualname = f"{_qualname(type(owner))}.{name}"
            if qualname not in self.allowed_classes or not inspect.isfunction(
                inspect.getattr_static(type(owner), name, None)
            ):
                raise UnsafePickleError(f"method {qualname!r} is not on the allowlist")
            self.resolved.add(qualname)
            return getattr(owner, name)
        raise UnsafePickleError(f"unknown persistent id kind {kind!r}")

    def _tensor(self, index: Any) -> torch.Tensor:
        if not isinstance(index, int) or not 0 <= index < len(self.tensors):
            raise UnsafePickleError(f"tensor index {index!r} out of range")
        return self.tensors[index]

    def _rebuild(self, pid: tuple) -> Any:
        kind = pid[0]
        if kind == "ndarray":
            return self._tensor(pid[1]).numpy().copy()
        if kind == "generator":
            generator = torch.Generator(device=str(pid[1]))
            generator.set_state(self._tensor(pid[2]))
            return generator
        tensor = self._tensor(pid[1])
        if pid[3]:
            tensor = tensor.detach().requires_grad_(True)
        if pid[2] is not None:
            if pid[2] not in self.allowed_classes:
                raise UnsafePickleError(f"tensor subclass {pid[2]!r} is not on the allowlist")
            self.resolved.add(pid[2])
            tensor = tensor.as_subclass(_resolve(pid[2]))
        return tensor


def _refuse_opcode(self: Any) -> None:
    raise UnsafePickleError("protocol 0/1 instance opcodes are not allowed")


def loads(data: Any, allowed_classes: Collection[str], resolved: set[str] | None = None) -> Any:
    """Rebuild what :func:`dumps` returned; only ``allowed_classes`` (qualified names) and
    :data:`SAFE_CALLABLES` may appear. :raises UnsafePickleError: anything else.

    :param resolved: when given, receives every allowlisted name the data used.
    """
    if not isinstance(data, dict) or set(data) != {PICKLE_KEY, TENSORS_KEY}:
        raise UnsafePickleError("expected {'pickle': uint8 tensor, 'tensors': [...]}")
    blob, tensors = data[PICKLE_KEY], data[TENSORS_KEY]
    if not (isinstance(blob, torch.Tensor) and blob.dtype == torch.uint8 and blob.dim() == 1):
        raise UnsafePickleError("'pickle' must be a 1-d uint8 tensor")
    if not isinstance(tensors, list | tuple) or not all(
        isinstance(t, torch.Tensor) for t in tensors
    ):
        raise UnsafePickleError("'tensors' must be a list of tensors")
    try:
        unpickler = _RestrictedUnpickler(blob.numpy().tobytes(), list(tensors), allowed_classes)
        obj = unpickler.load()
        if resolved is not None:
            resolved |= unpickler.resolved
        return obj
    except UnsafePickleError:
        raise
    except Exception as err:  # a truncated or corrupted stream
        raise UnsafePickleError(f"corrupted data ({type(err).__name__}: {err})") from err


def referenced_globals(data: dict[str, Any]) -> set[str]:
    """The qualified names of every global the pickle in ``data`` references, read from its
    opcodes (no object is built): what an allowlist for it must contain."""
    import pickletools

    names: set[str] = set()
    pushed: list[Any] = []
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(data[PICKLE_KEY].numpy().tobytes()):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            pushed.append(arg)
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(arg)))
        elif opcode.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = pushed[-1] if pushed else None
        elif opcode.name == "STACK_GLOBAL":
            names.add(f"{pushed[-2]}.{pushed[-1]}")
            pushed.append(None)
        elif opcode.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
            pushed.append(None)
        else:
            pushed.append(None)
    return names
