"""strawberry's extension hooks, entered as strawberry enters them, without finding and
wrapping each extension's hooks anew for every request.

For each request and each stage (operation, parsing, validation, execution) strawberry
0.341.2 looks every extension's hook up, inspects whether it is a generator, and wraps it
with `contextlib.contextmanager` around a new bound method (`functools.update_wrapper` each
time): with Conveyor's dozen extensions, about a twentieth of a small compiled read's CPU
(py-spy on the 100-task read). Here what a hook is is found once per extension class and
stage, and a generator hook's `contextmanager` is made once per class: calling it with the
extension gives the context manager strawberry would have made. Entering, leaving and the
order of the hooks are strawberry's own (`ExtensionContextManagerBase.__aenter__`/`__exit__`);
hooks that are plain functions or coroutines are left to strawberry's wrapping.
"""

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

#: A generator hook's context manager factory (called with the extension), and whether it
#: is asynchronous.
_Factory = tuple[Callable[[SchemaExtension], Any], bool]
#: By (stage, extension class): the factory; None when the class has no such hook; absent
#: when strawberry wraps it itself (a plain function or coroutine).
_FACTORIES: dict[tuple[str, type[SchemaExtension]], _Factory | None] = {}


def _factory(stage: str, extension_class: type[SchemaExtension]) -> _Factory | None:
    hook = getattr(extension_class, stage)
    if hook is getattr(SchemaExtension, stage):
        return None
    if inspect.isgeneratorfunction(hook):
        return (contextlib.contextmanager(hook), False)
    if inspect.isasyncgenfunction(hook):
        return (contextlib.asynccontextmanager(hook), True)
    raise LookupError(stage)


class _Hooks(ExtensionContextManagerBase):
    def get_hook(self, extension: SchemaExtension) -> WrappedHook | None:
        key = (self.HOOK_NAME, type(extension))
        try:
            found = _FACTORIES[key]
        except KeyError:
            try:
                found = _FACTORIES[key] = _factory(*key)
            except LookupError:
                return super().get_hook(extension)
        if found is None:
            return None
        factory, is_async = found
        return WrappedHook(
            extension=extension, hook=functools.partial(factory, extension), is_async=is_async
        )


class _Operation(_Hooks, OperationContextManager):
    pass


class _Parsing(_Hooks, ParsingContextManager):
    pass


class _Validation(_Hooks, ValidationContextManager):
    pass


class _Executing(_Hooks, ExecutingContextManager):
    pass


class CachedHooksRunner(SchemaExtensionsRunner):
    """strawberry's runner, its stages' hooks found as the module says."""

    def operation(self) -> OperationContextManager:
        return _Operation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions)
