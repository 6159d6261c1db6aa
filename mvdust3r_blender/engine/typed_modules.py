"""``nn.ModuleList`` / ``nn.Sequential`` whose items are all of one module type.

torch types ``blocks[i]`` and ``for blk in blocks`` as a plain ``nn.Module`` (and an attribute of
that as ``Tensor | Module``), so the type checker would know nothing of a decoder block taken from
its list. These subclasses only narrow the types: same storage, same state-dict keys, same calls.
"""
from __future__ import annotations

from typing import Generic, Iterable, Iterator, TypeVar, cast, overload

from torch import nn

M = TypeVar("M", bound=nn.Module)


class TypedModuleList(nn.ModuleList, Generic[M]):
    """An ``nn.ModuleList`` built from ``M`` modules (its types assume no other kind is added later)."""

    def __init__(self, modules: Iterable[M] = ()) -> None:
        super().__init__(modules)

    @overload
    def __getitem__(self, idx: slice) -> TypedModuleList[M]: ...

    @overload
    def __getitem__(self, idx: int) -> M: ...

    def __getitem__(self, idx: int | slice) -> M | TypedModuleList[M]:
        return cast("M | TypedModuleList[M]", super().__getitem__(idx))

    def __iter__(self) -> Iterator[M]:
        return cast(Iterator[M], super().__iter__())


class TypedSequential(nn.Sequential, Generic[M]):
    """An ``nn.Sequential`` of ``M`` run in order (``forward`` is ``nn.Sequential``'s)."""

    def __init__(self, *modules: M) -> None:
        super().__init__(*modules)

    @overload
    def __getitem__(self, idx: int) -> M: ...

    @overload
    def __getitem__(self, idx: slice) -> TypedSequential[M]: ...

    def __getitem__(self, idx: int | slice) -> M | TypedSequential[M]:
        return cast("M | TypedSequential[M]", super().__getitem__(idx))

    def __iter__(self) -> Iterator[M]:
        return cast(Iterator[M], super().__iter__())
