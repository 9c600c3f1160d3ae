"""A griffe extension that renders the Sphinx roles of numpydoc docstrings as cross-references.

bayesnn's docstrings are numpydoc with Sphinx roles (``:func:`bayesnn.tree.load_tree```,
``:class:`~bayesnn.MAP```, ``:meth:`predict```), which mkdocstrings would show as they are.
Once griffe has loaded the package, every role in every docstring becomes an optional
autorefs cross-reference: a link where the target is documented, code where it is not, so
that a reference to an undocumented name never fails the strict build. As in Sphinx,
``~`` shows only the last component of the target and ``:role:`title <target>``` shows the
title; a name without dots (or whose first component is a name in scope) is resolved where
the documented object is defined.

Registered in ``mkdocs.yml`` as an ``extensions`` entry of the python handler.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import griffe

ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|type):`(?P<text>[^`]+)`"
)
_TITLED = re.compile(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)


def target_path(obj: griffe.Object, name: str) -> str:
    """``name`` as the full path of an object, resolved in the scope of ``obj`` when its
    first component is a name there; else ``name`` itself."""
    head, _, rest = name.partition(".")
    scope = obj if obj.is_module or obj.is_class else obj.parent
    try:
        resolved = scope.resolve(head) if scope is not None else name
    except griffe.NameResolutionError:
        return name
    return f"{resolved}.{rest}" if rest else resolved


def cross_reference(obj: griffe.Object, text: str) -> str:
    """The autorefs element for the role text ``text`` in the docstring of ``obj``."""
    titled = _TITLED.match(text)
    if titled:
        title, name = titled["title"], titled["target"].lstrip("~.")
    else:
        name = text.lstrip("~.")
        title = name.rsplit(".", 1)[-1] if text.startswith("~") else name
    identifier = html.escape(target_path(obj, name), quote=True)
    return (f'<autoref identifier="{identifier}" optional>'
            f"<code>{html.escape(title)}</code></autoref>")


def objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined in it (not the names it imports)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from objects(member)


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring in a loaded package (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(
                    lambda m, obj=obj: cross_reference(obj, m["text"]), obj.docstring.value)
