"""Build the API reference from the docstrings: ``python docs/build.py [OUT]`` (default: site/; ``make docs``).

It documents the public API (the module ``xling``: what ``xling.__all__`` lists) and the scripts in
examples/, with pdoc (``pip install pdoc``), into OUT/index.html. The build fails, exit status 1 and
one line per problem, on any warning pdoc gives and on a broken reference: a name in single
backticks in a docstring that starts with ``xling.`` or with a public name (``Run.evaluate``,
``xling.Config.replace``) but names nothing.
"""

from __future__ import annotations

import inspect
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
_CODE = re.compile(r"(?<!`)`([A-Za-z_][\w.]*)(?:\(\))?`(?!`)")  # `Name`, `Name.attr`, `name()`; not ``literal``


def _docstrings(obj, where: str, depth: int = 0):
    """(where, docstring) of an object and of its public members (classes: methods and properties)."""
    doc = inspect.getdoc(obj) if not isinstance(obj, property) else obj.__doc__
    if doc:
        yield where, doc
    if depth < 2 and (inspect.isclass(obj) or inspect.ismodule(obj)):
        if inspect.isclass(obj):
            names = list(vars(obj))
        else:  # a module: what it exports, or the functions it defines
            names = getattr(obj, "__all__", None) or [n for n, v in vars(obj).items()
                                                      if inspect.isfunction(v) and v.__module__ == obj.__name__]
        for name in names or ():
            if not name.startswith("_"):
                member = getattr(obj, name) if inspect.ismodule(obj) else vars(obj)[name]
                if inspect.ismodule(obj) or inspect.isfunction(member) or isinstance(member, property):
                    yield from _docstrings(member, f"{where}.{name}", depth + 1)


def _resolves(public, name: str) -> bool:
    obj = public
    for part in name.removeprefix("xling.").split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def broken_references(public, docstrings) -> list[str]:
    """References in `docstrings` ((where, text) pairs) to `public` (the xling module) that name nothing."""
    exported = set(public.__all__)
    problems = []
    for where, text in docstrings:
        for name in _CODE.findall(text):
            if (name.startswith("xling.") or name.split(".")[0] in exported) and not _resolves(public, name):
                problems.append(f"{where}: broken reference `{name}`")
    return problems


def build(out: Path) -> list[str]:
    """Render the reference into `out`; the problems found (empty: a clean build)."""
    import pdoc
    import pdoc.render

    import xling

    for name in xling.__all__:  # load the lazy attributes: pdoc reads the module's namespace, not getattr
        getattr(xling, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.render.configure(docformat="markdown", footer_text=f"xling {xling.__version__}", search=True,
                              show_source=True)
        pdoc.pdoc("xling", r"!xling\.", *EXAMPLES, output_directory=out)  # the public API and the examples
    problems = [f"pdoc: {w.message}" for w in caught]
    texts = list(_docstrings(xling, "xling"))
    for path in EXAMPLES:
        module = sys.modules.get(path.stem)
        texts += list(_docstrings(module, f"examples/{path.name}")) if module else []
    return problems + broken_references(xling, texts)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ROOT / "site")
    problems = build(out)
    for line in problems:
        print(f"docs: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"wrote {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
