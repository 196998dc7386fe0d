"""One error tree: every exception class lives in gateway/errors.py and is drawn in its docstring.

The walk reads the source (it imports nothing of the gateway), so a class defined inside a
function, or deriving from a library's exception through a class of our own, is found too.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import gateway
from gateway import errors

PACKAGE = Path(gateway.__file__).parent
ERRORS_MODULE = "gateway.errors"


@dataclass
class _Module:
    name: str
    is_package: bool
    classes: dict[str, list[ast.expr]] = field(default_factory=dict)  # name -> bases, all scopes
    imported: dict[str, str] = field(default_factory=dict)  # local name -> dotted target


def _read(path: Path, name: str, is_package: bool) -> _Module:
    module = _Module(name, is_package)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ClassDef):
            module.classes[node.name] = node.bases
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    module.imported[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    module.imported[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.module, node.level)
            for alias in node.names:
                module.imported[alias.asname or alias.name] = f"{base}.{alias.name}"
    return module


def _absolute(module: _Module, target: str | None, level: int) -> str:
    if level == 0:
        return target or ""
    parts = module.name.split(".")
    anchor = parts if module.is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, target] if target else anchor)


class _Tree:
    """The classes of a source tree, and whether each derives from ``BaseException``."""

    def __init__(self, root: Path, package: str) -> None:
        self.modules: dict[str, _Module] = {}
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            self.modules[name] = _read(path, name, is_package)
        self.package = package
        self._verdicts: dict[tuple[str, str], bool] = {}

    def exception_classes(self) -> list[tuple[str, str]]:
        """(module, class) for every class, in any scope, that is an exception."""
        return [
            (module.name, cls)
            for module in self.modules.values()
            for cls in module.classes
            if self._is_exception(module.name, cls, ())
        ]

    def _is_exception(self, module: str, cls: str, seen: tuple[tuple[str, str], ...]) -> bool:
        key = (module, cls)
        if key in seen:
            return False  # a cycle of names: nothing to decide
        if key not in self._verdicts:
            bases = self.modules[module].classes[cls]
            self._verdicts[key] = any(self._derives(module, base, (*seen, key)) for base in bases)
        return self._verdicts[key]

    def _derives(self, module: str, base: ast.expr, seen: tuple[tuple[str, str], ...]) -> bool:
        dotted = _dotted(base)
        if dotted is None:
            return False  # a call or subscript as a base: not an exception hierarchy we write
        head, _, rest = dotted.partition(".")
        here = self.modules[module]
        if not rest and head in here.classes:
            return self._is_exception(module, head, seen)
        if head in here.imported:
            return self._resolve(here.imported[head] + (f".{rest}" if rest else ""), seen)
        value = getattr(builtins, dotted, None)
        return isinstance(value, type) and issubclass(value, BaseException)

    def _resolve(self, target: str, seen: tuple[tuple[str, str], ...]) -> bool:
        if target.startswith(f"{self.package}.") or target == self.package:
            owner, _, name = target.rpartition(".")
            if owner in self.modules and name in self.modules[owner].classes:
                return self._is_exception(owner, name, seen)
            if owner in self.modules and name in self.modules[owner].imported:
                return self._resolve(self.modules[owner].imported[name], seen)
            return False
        # A library's name: import it and ask.
        parts = target.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                value: object = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                value = getattr(value, attr, None)
            return isinstance(value, type) and issubclass(value, BaseException)
        return False


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _drawn_tree(doc: str) -> list[tuple[int, str]]:
    """(depth, name) of every class in the docstring's tree, in order; depth from the column."""
    drawn: list[tuple[int, str]] = []
    root_column = None
    for line in doc.splitlines():
        branch = re.match(r"^[\s│]*[├└]── ([A-Z]\w*)", line)
        root = re.fullmatch(r"(\s*)(GatewayError)\s*", line)
        if root:
            root_column = len(root.group(1))
            drawn.append((0, "GatewayError"))
        elif branch and root_column is not None:
            drawn.append(((branch.start(1) - root_column) // 4, branch.group(1)))
    return drawn


def _tree_problems(doc: str, classes: dict[str, type[BaseException]]) -> list[str]:
    """What is wrong with the drawing of ``classes`` in ``doc``: missing, extra, or under the wrong base."""
    drawn = _drawn_tree(doc)
    names = [name for _, name in drawn]
    problems = [f"{name} is drawn twice" for name in sorted(set(names)) if names.count(name) > 1]
    problems += [f"{name} is not drawn" for name in sorted(set(classes) - set(names))]
    problems += [f"{name} is drawn but is no exception class" for name in sorted(set(names) - set(classes))]
    stack: list[str] = []
    for depth, name in drawn:
        del stack[depth:]
        bases = [b.__name__ for b in classes[name].__bases__] if name in classes else []
        if stack and name in classes and bases != [stack[-1]]:
            problems.append(f"{name} is drawn under {stack[-1]}, but derives from {', '.join(bases)}")
        stack.append(name)
    return problems


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == ERRORS_MODULE
    }


def test_every_exception_class_is_defined_in_errors() -> None:
    tree = _Tree(PACKAGE, "gateway")
    found = tree.exception_classes()
    elsewhere = sorted(f"{module}.{cls}" for module, cls in found if module != ERRORS_MODULE)
    assert elsewhere == [], "define exception classes in gateway/errors.py (and draw them in its tree)"
    assert {cls for _, cls in found} >= {"GatewayError", "ClientError", "CryptoError"}


def test_the_walk_finds_exception_classes_however_they_are_spelt(tmp_path: Path) -> None:
    """The check itself can fail: a fake package with every way of spelling an exception class."""
    pkg = tmp_path / "fake"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("class Root(Exception):\n    pass\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text(
        textwrap.dedent(
            """
            import signxml.exceptions
            from cryptography.exceptions import InvalidSignature as Bad
            from fake import errors
            from fake.errors import Root
            from ..errors import Root as Again

            class Plain(ValueError): ...
            class Deeper(Plain): ...
            class FromRoot(Root): ...
            class Dotted(errors.Root): ...
            class Relative(Again): ...
            class FromLibrary(Bad): ...
            class LibraryDotted(signxml.exceptions.InvalidInput): ...

            def factory():
                class Hidden(KeyError): ...
                return Hidden

            class NotAnError: ...
            class Mixin(NotAnError, dict): ...
            """
        )
    )
    found = {f"{module}.{cls}" for module, cls in _Tree(pkg, "fake").exception_classes()}
    expected = ["Plain", "Deeper", "FromRoot", "Dotted", "Relative", "FromLibrary", "LibraryDotted", "Hidden"]
    assert found == {"fake.errors.Root"} | {f"fake.sub.mod.{cls}" for cls in expected}


def test_the_docstring_draws_every_error_class_under_its_base() -> None:
    assert errors.__doc__
    assert _drawn_tree(errors.__doc__)[0] == (0, "GatewayError")
    assert _tree_problems(errors.__doc__, _error_classes()) == []


def test_the_tree_check_can_fail() -> None:
    classes = _error_classes()
    assert "ConfigError is not drawn" in _tree_problems("    GatewayError\n    └── ClientError\n", classes)
    wrong = "    GatewayError\n    └── ClientError\n        └── CryptoError\n"
    assert _tree_problems(wrong, {n: classes[n] for n in ("GatewayError", "ClientError", "CryptoError")}) == [
        "CryptoError is drawn under ClientError, but derives from GatewayError"
    ]
    assert "Oops is drawn but is no exception class" in _tree_problems(
        "    GatewayError\n    └── Oops\n", classes
    )


def test_a_refused_signature_maps_to_the_same_client_error_as_before() -> None:
    weak = errors.SignatureRejected.from_crypto(errors.SignatureAlgorithmRefused("digest algorithm x"))
    plain = errors.SignatureRejected.from_crypto(
        errors.SignatureInvalid("the signature value does not verify")
    )
    assert (type(weak), weak.status, weak.code, weak.message) == (
        errors.WeakAlgorithm,
        400,
        "weak_algorithm",
        "digest algorithm x",
    )
    assert (type(plain), plain.status, plain.code, plain.message) == (
        errors.SignatureRejected,
        400,
        "signature_invalid",
        "the signature value does not verify",
    )
    assert not issubclass(errors.SignatureInvalid, errors.ClientError)  # crypto knows nothing of HTTP
