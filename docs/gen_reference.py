"""The API reference pages, generated at build time (mkdocs-gen-files runs this).

Every name in ``callscaler_async.__all__`` and in the ``__all__`` of each public subpackage
and module is documented once, under its shortest public path; a name exported again further
down links back there. The package is read statically (griffe), so a name added to an
``__all__`` appears in the reference without touching the docs, and the optional
dependencies (click, redis, FastAPI) need not be installed for the build.

Top-level names are grouped by the private module that defines them (the client, the errors,
the models, ...); each public subpackage gets its own page.
"""

from __future__ import annotations

from collections import defaultdict

import griffe
import mkdocs_gen_files

PACKAGE = "callscaler_async"

# Titles for the groups of top-level names, by defining module; any other module gets a
# title from its own name, so a new module needs no entry here.
TITLES = {
    "callscaler_async._client": "Client",
    "callscaler_async._errors": "Errors",
    "callscaler_async._money": "Money",
    "callscaler_async._pagination": "Pagination",
    "callscaler_async._transport": "Responses and events",
    "callscaler_async._version": "Version",
    "callscaler_async.models": "Models",
    "callscaler_async.ratelimit": "Rate limits",
    "callscaler_async.resources": "Resources",
}


def _public(path: str) -> bool:
    return not any(part.startswith("_") for part in path.split(".")[1:])


def _modules(module: griffe.Module) -> list[griffe.Module]:
    found = [module]
    for child in module.modules.values():
        if not child.is_alias and _public(child.path):
            found.extend(_modules(child))
    return found


def _exports(module: griffe.Module) -> list[str]:
    names: list[str] = []
    for name in module.exports or ():
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def _target(obj: griffe.Object | griffe.Alias) -> str:
    return obj.final_target.path if isinstance(obj, griffe.Alias) else obj.path


def _group_of(target: str) -> str:
    """The module a top-level name comes from: ``_errors``, or ``models`` for any model."""
    parts = target.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:depth])
        if module in TITLES:
            return module
    return ".".join(parts[:2])


def _slug(path: str) -> str:
    return path.replace("callscaler_async.", "").lstrip("_").replace("._", ".") or "index"


def main() -> None:
    package = griffe.load(PACKAGE, resolve_aliases=True, resolve_external=False)
    documented: dict[str, str] = {}  # defining path -> the identifier it is documented under
    pages: dict[str, list[str]] = defaultdict(list)  # page -> markdown blocks
    titles: dict[str, str] = {}
    index: list[tuple[str, str]] = []  # (public name, page)

    groups: dict[str, list[str]] = defaultdict(list)
    for name in _exports(package):
        groups[_group_of(_target(package[name]))].append(name)
    for group, names in groups.items():
        page = f"reference/{_slug(group)}.md"
        titles[page] = TITLES.get(group, group.rsplit(".", 1)[-1].lstrip("_").capitalize())
        pages[page].append(
            f"# {titles[page]}\n\nImported from `{PACKAGE}` (`import {PACKAGE} as cs`).\n"
        )
        for name in names:
            documented[_target(package[name])] = f"{PACKAGE}.{name}"
            pages[page].append(f"::: {PACKAGE}.{name}\n")
            index.append((f"{PACKAGE}.{name}", page))

    for module in _modules(package)[1:]:
        names = _exports(module)
        if not names:
            continue
        page = f"reference/{_slug(module.path)}.md"
        new = [n for n in names if _target(module[n]) not in documented]
        if not new:
            continue  # everything it exports is documented at a shorter path
        intro = (
            f"::: {module.path}\n    options:\n      members: false\n"
            "      show_root_heading: false\n"
        )
        if page in pages:  # the page of top-level names this subpackage defines
            pages[page].append(f"## More in `{module.path}`\n\n{intro}")
        else:
            titles[page] = module.path
            pages[page].append(f"# `{module.path}`\n\n{intro}")
        again = [n for n in names if n not in new]
        for name in new:
            documented[_target(module[name])] = f"{module.path}.{name}"
            pages[page].append(f"::: {module.path}.{name}\n")
            index.append((f"{module.path}.{name}", page))
        if again:
            links = ", ".join(f"[`{n}`][{documented[_target(module[n])]}]" for n in again)
            pages[page].append(f"Also exported here: {links}.\n")

    for page, blocks in pages.items():
        with mkdocs_gen_files.open(page, "w") as handle:
            handle.write("\n".join(blocks))

    nav = mkdocs_gen_files.Nav()
    nav["Index"] = "index.md"
    for page in pages:
        nav[titles[page]] = page.removeprefix("reference/")
    with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as handle:
        handle.writelines(nav.build_literate_nav())

    with mkdocs_gen_files.open("reference/index.md", "w") as handle:
        handle.write(
            "# API reference\n\nEvery public name, generated from the docstrings. Names are "
            "documented under their shortest import path.\n\n| name | page |\n|---|---|\n"
        )
        for name, page in sorted(index, key=lambda item: item[0].lower()):
            handle.write(
                f"| [`{name}`][{name}] | [{titles[page]}]({page.removeprefix('reference/')}) |\n"
            )


main()
