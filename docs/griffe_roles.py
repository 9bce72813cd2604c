"""A griffe extension for the API reference: the reST roles of the docstrings as Markdown.

The docstrings are read as Markdown (Google-style sections); ``:class:`~sifa.x.Y``` would show
its role as text. Each role becomes a code span of its target (``~`` keeps the last name).
Plain code spans, not links, so that a role naming an object the reference does not render
cannot break the strict build.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target.lstrip('.')}`"


class ReSTRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
