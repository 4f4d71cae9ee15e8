"""Every runtime dependency of tui-mail (the whole requirement tree of the installed
distribution, extras excluded) has a permissive or file-level (MPL) licence: tui-mail is MIT
and must stay distributable as such. A GPL/AGPL/LGPL package (html2text was one) fails this
test; a package dual-licensed with a permissive option passes.

The licence is read from the distribution's metadata (License-Expression, License, trove
classifiers), and when a package declares none of those, from its licence file's text."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement

PERMISSIVE = re.compile(
    r"\b(MIT|MIT-0|BSD|ISC|Apache|PSF|Python Software Foundation|Unlicense|MPL|Mozilla Public License"
    r"|Zlib|0BSD|CC0|HPND)\b", re.I)
COPYLEFT = re.compile(r"\b(A?GPL|LGPL|GNU (Affero |Lesser |Library )?General Public License)\b", re.I)
LICENCE_TEXTS = {  # what a licence file says → the licence it is
    "Permission is hereby granted, free of charge": "MIT",
    "Redistribution and use in source and binary forms": "BSD",
    "Apache License": "Apache",
    "GNU GENERAL PUBLIC LICENSE": "GPL",
    "GNU LESSER GENERAL PUBLIC LICENSE": "LGPL",
    "GNU AFFERO GENERAL PUBLIC LICENSE": "AGPL",
}


def runtime_tree(root: str = "tui-mail") -> dict[str, metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = metadata.distribution(name)
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def declared_licence(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    parts = [meta.get("License-Expression") or "", (meta.get("License") or "")[:200]]
    parts += [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
              if c.startswith("License ::") and c.strip() != "License :: OSI Approved"]
    declared = " / ".join(p.strip() for p in parts if p and p.strip() and p.strip() != "UNKNOWN")
    if declared:
        return declared
    for f in dist.files or []:
        if re.search(r"(LICEN[CS]E|COPYING)", str(f), re.I):
            text = f.locate().read_text(errors="replace")
            for phrase, name in LICENCE_TEXTS.items():
                if phrase.lower() in text.lower():
                    return f"{name} (from {f.name})"
    return ""


def is_acceptable(licence: str) -> bool:
    """Permissive, or copyleft only as one option of a dual licence ("MIT OR GPL-2.0")."""
    if not PERMISSIVE.search(licence):
        return False
    if COPYLEFT.search(licence):
        return bool(re.search(r"\bOR\b", licence)) and any(
            PERMISSIVE.search(alt) and not COPYLEFT.search(alt) for alt in re.split(r"\bOR\b|/", licence))
    return True


def test_the_rule_itself():
    assert is_acceptable("MIT") and is_acceptable("Apache-2.0 OR BSD-3-Clause") and is_acceptable("MPL-2.0")
    assert is_acceptable("MIT OR GPL-2.0-or-later")
    assert not is_acceptable("GPL-3.0-or-later") and not is_acceptable("GNU General Public License v3 (GPLv3)")
    assert not is_acceptable("LGPL-2.1-only") and not is_acceptable("AGPL-3.0") and not is_acceptable("")


def test_every_runtime_dependency_is_permissively_licensed():
    tree = runtime_tree()
    assert "inscriptis" in tree and "textual" in tree and "html2text" not in tree
    found = {name: declared_licence(dist) for name, dist in tree.items()}
    bad = {name: lic or "no licence declared" for name, lic in found.items() if not is_acceptable(lic)}
    assert not bad, f"dependencies whose licence does not fit an MIT project: {bad}"
