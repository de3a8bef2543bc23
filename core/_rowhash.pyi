"""Types for the cffi module that ``core/_build_rowhash.py`` compiles (see its C contract)."""

from typing import Any

class _FFI:
    NULL: Any
    def new(self, cdecl: str, init: Any = ...) -> Any: ...
    def from_buffer(self, cdecl: str, python_buffer: Any, require_writable: bool = ...) -> Any: ...

class _Lib:
    def rowhash_rows(self, columns: Any, ncolumns: int, n: int, out: Any) -> int: ...

ffi: _FFI
lib: _Lib
