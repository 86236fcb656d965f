"""The documentation under ``docs/`` builds, its examples run, and its generated tables match the code.

What is checked:

- ``mkdocs build --strict`` succeeds (broken links, missing pages, bad anchors fail the build);
- every page of ``docs/`` is in the ``nav`` of ``mkdocs.yml``;
- every fenced ``python``/``pycon`` block of every page runs, in page order, in one namespace per page and a
  fresh working directory. Blocks with ``>>>`` prompts are doctests (their printed output must match,
  with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``); other blocks are executed as scripts. A block is skipped
  only when the line before it reads ``*Not executed by the docs tests: <reason>.*`` (shown on the page);
- shell blocks: every ``repurpose-opt ...`` command parses with the real CLI parser, every ``python
  benchmarks/...`` / ``python examples/...`` script exists and knows the ``--flags`` used, every pip extra
  named exists in ``pyproject.toml``;
- the generated blocks (the backend table on ``backends/index.md`` and, on each backend page, its
  problems, exactness, extra and options table) equal what the backend classes declare, so the options
  documented can never drift from the ``options`` dicts. ``python tests/test_docs.py --update`` rewrites
  them after a change in the code.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"^\*Not executed by the docs tests: (?P<reason>[^*]{5,})\*$")
PYTHON_INFOS = ("python", "py", "pycon")
SHELL_INFOS = ("sh", "bash", "console", "shell")

GENERATED = re.compile(
    r"(?P<begin><!-- BEGIN generated: (?P<key>[\w-]+) .*?-->\n)(?P<body>.*?)(?P<end><!-- END generated -->)", re.S
)


# ============================================================================================ helpers
def _rel(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def _blocks(page: Path) -> list[dict]:
    """Fenced blocks of a page: info string, dedented body, first line number, skip reason."""
    text = page.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        previous = before[-1].strip() if before else ""
        skip = SKIP.match(previous)
        indent = match.group("indent")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in match.group("body").splitlines())
        out.append({
            "info": match.group("info").strip().split()[0].lower() if match.group("info").strip() else "",
            "body": textwrap.dedent(body) + "\n",
            "line": text.count("\n", 0, match.start()) + 2,
            "skip": skip.group("reason") if skip else None,
        })
    return out


def _python_pages() -> list[Path]:
    return [p for p in PAGES if any(b["info"] in PYTHON_INFOS for b in _blocks(p))]


# ============================================================================================= build
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    for page in PAGES:  # every page was rendered
        html = tmp_path / "site" / _rel(page).replace(".md", "") / "index.html"
        if page.name == "index.md":
            html = tmp_path / "site" / Path(_rel(page)).parent / "index.html"
        assert html.is_file(), f"{_rel(page)} was not rendered ({html} missing)"


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def test_every_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = _nav_files(config["nav"])
    pages = [_rel(p) for p in PAGES]
    assert sorted(set(pages) - set(listed)) == [], "pages missing from the nav of mkdocs.yml"
    assert sorted(set(listed) - set(pages)) == [], "nav entries without a page"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"


# ========================================================================================== examples
@pytest.fixture
def fresh_dir(tmp_path, monkeypatch):
    """A scratch working directory with a non-interactive matplotlib and one BLAS thread (the machine is shared)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a scikit-learn dependency
        yield tmp_path
        return
    with threadpool_limits(1):
        yield tmp_path


@pytest.mark.parametrize("page", _python_pages(), ids=_rel)
def test_page_examples_run(page, fresh_dir):
    namespace: dict = {"__name__": f"docs:{_rel(page)}"}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    parser = doctest.DocTestParser()
    ran = 0
    for block in _blocks(page):
        if block["info"] not in PYTHON_INFOS or block["skip"]:
            continue
        where = f"{_rel(page)}:{block['line']}"
        if re.search(r"^>>> ", block["body"], re.M):
            test = parser.get_doctest(block["body"], namespace, where, str(page), block["line"] - 1)
            report: list[str] = []
            result = runner.run(test, clear_globs=False, out=report.append)
            namespace.update(test.globs)  # DocTest works on a copy: carry its names to the next blocks
            assert result.failed == 0, f"doctest block at {where} failed:\n{''.join(report)}"
        else:
            exec(compile(block["body"], where, "exec"), namespace)  # noqa: S102 - the docs' own examples
        ran += 1
    assert ran > 0


def test_skipped_blocks_say_why():
    skipped = [(p, b) for p in PAGES for b in _blocks(p) if b["skip"]]
    for page, block in skipped:
        assert block["info"] in PYTHON_INFOS, f"{_rel(page)}:{block['line']}: only python blocks can be skipped"
        assert len(block["skip"].split()) >= 2, f"{_rel(page)}:{block['line']}: give a reason for not running it"
    for page in PAGES:
        assert "+SKIP" not in page.read_text(encoding="utf-8"), f"{_rel(page)}: every example must run; no doctest +SKIP"
    # Skipping is for what cannot run in CI (several hosts): keep it rare.
    assert len(skipped) <= 3, [f"{_rel(p)}:{b['line']}" for p, b in skipped]


def test_python_blocks_are_labelled():
    """An unlabelled block that holds Python would silently escape execution."""
    for page in PAGES:
        for block in _blocks(page):
            if block["info"] == "":
                body = block["body"]
                assert not re.search(r"^(>>> |import |from \S+ import )", body, re.M), (
                    f"{_rel(page)}:{block['line']}: label this block ```python (or ```text if it is output)"
                )


# ============================================================================================= shell
def _shell_commands() -> list[tuple[str, str]]:
    commands = []
    for page in PAGES:
        for block in _blocks(page):
            if block["info"] not in SHELL_INFOS:
                continue
            joined = block["body"].replace("\\\n", " ")
            for number, line in enumerate(joined.splitlines()):
                line = re.sub(r"^\S*\$ ", "", line.strip())  # prompts such as "$ " or "host0$ "
                if line and not line.startswith("#"):
                    for part in re.split(r"\s*(?:&&|;|\|\|?)\s*", line):
                        commands.append((f"{_rel(page)}:{block['line'] + number}", part.strip()))
    return commands


def _extras() -> set[str]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(data["project"]["optional-dependencies"])


def test_shell_commands_are_valid():
    from repurpose_opt.cli import build_parser

    parser = build_parser()
    extras = _extras()
    checked = 0
    for where, command in _shell_commands():
        words = shlex.split(command, comments=True)
        if words[:1] == ["flock"]:  # flock LOCKFILE command ...
            words = words[2:]
        if not words:
            continue
        if words[0] == "repurpose-opt":
            try:
                args = parser.parse_args(words[1:])
            except SystemExit as exc:
                pytest.fail(f"{where}: `{command}` does not parse with the CLI (exit {exc.code})")
            assert args.handler is not None or "--version" in words or "--help" in words, f"{where}: no sub-command"
            checked += 1
        elif words[0] in ("python", "python3") and len(words) > 1 and words[1].startswith(("benchmarks/", "examples/")):
            script = ROOT / words[1]
            assert script.is_file(), f"{where}: {words[1]} does not exist"
            source = script.read_text(encoding="utf-8")
            for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                assert f'"{flag}"' in source, f"{where}: {words[1]} has no option {flag}"
            checked += 1
        for extra_list in re.findall(r"\[([\w,-]+)\]", command) if "pip install" in command else []:
            unknown = set(extra_list.split(",")) - extras
            assert not unknown, f"{where}: pip extra(s) {sorted(unknown)} not in pyproject.toml"
    assert checked >= 5


# ========================================================================================= generated
def _cell(text: str) -> str:
    return str(text).replace("|", r"\|").replace("\n", " ")


def _backend_classes() -> dict:
    from repurpose_opt.solvers.registry import BUILTIN_BACKENDS, get_backend

    return {name: get_backend(name) for name in BUILTIN_BACKENDS}


def _problems(cls) -> str:
    return ", ".join(f"`{kind}`" for kind in cls.problem_types)


def _exact(cls) -> str:
    exact = [kind for kind in cls.problem_types if cls.is_exact(kind)]
    if not exact:
        return "no (heuristic: status FEASIBLE at best, never OPTIMAL)"
    if len(exact) == len(cls.problem_types):
        return "yes, on every problem it accepts (status OPTIMAL only with a matching bound)"
    return "on " + ", ".join(f"`{kind}`" for kind in exact) + " only (status OPTIMAL only with a matching bound)"


def _needs(cls) -> str:
    if not cls.extra:
        return "the core install"
    modules = ", ".join(f"`{m}`" for m in cls.requires)
    return f"{modules}: `pip install 'repurpose-opt[{cls.extra}]'`"


def _backend_facts(name: str) -> str:
    cls = _backend_classes()[name]
    lines = [
        f"- **Problems:** {_problems(cls)}",
        f"- **Proves optimality:** {_exact(cls)}",
        f"- **Needs:** {_needs(cls)}",
        "",
    ]
    if cls.options:
        lines += ["| option | default | what it does |", "|---|---|---|"]
        lines += [f"| `{key}` | `{opt.default!r}` | {_cell(opt.doc)} |" for key, opt in cls.options.items()]
    else:
        lines.append("This backend has no options (`options` must be empty or omitted).")
    return "\n".join(lines) + "\n"


def _backend_table() -> str:
    lines = ["| backend | what it is | problems | proves optimality on | needs |", "|---|---|---|---|---|"]
    for name, cls in _backend_classes().items():
        exact = ", ".join(k.replace("Problem", "") for k in cls.problem_types if cls.is_exact(k)) or "-"
        problems = ", ".join(k.replace("Problem", "") for k in cls.problem_types)
        needs = f"`[{cls.extra}]`" if cls.extra else "core"
        lines.append(f"| [`{name}`]({name}.md) | {_cell(cls.description)} | {problems} | {exact} | {needs} |")
    return "\n".join(lines) + "\n"


def expected_blocks() -> dict[tuple[str, str], str]:
    """(page, key) -> the generated markdown that must sit between the page's markers."""
    blocks = {("backends/index.md", "backend-table"): _backend_table()}
    for name in _backend_classes():
        blocks[(f"backends/{name}.md", "backend-facts")] = _backend_facts(name)
    return blocks


def _generated_in(page: Path) -> dict[str, str]:
    return {m.group("key"): m.group("body") for m in GENERATED.finditer(page.read_text(encoding="utf-8"))}


def test_every_backend_has_a_page():
    for name in _backend_classes():
        assert (DOCS / "backends" / f"{name}.md").is_file(), f"docs/backends/{name}.md is missing"


@pytest.mark.parametrize("page,key", sorted(expected_blocks()), ids=lambda v: v)
def test_generated_blocks_match_the_code(page, key):
    found = _generated_in(DOCS / page)
    assert key in found, f"docs/{page} has no generated block {key!r}; run python tests/test_docs.py --update"
    assert found[key] == expected_blocks()[(page, key)], (
        f"docs/{page}: the {key} block is out of date with the backend classes; run python tests/test_docs.py --update"
    )


def test_backend_pages_document_every_option():
    """Belt and braces beside the exact comparison: each option key appears on its page."""
    for name, cls in _backend_classes().items():
        text = (DOCS / "backends" / f"{name}.md").read_text(encoding="utf-8")
        missing = [key for key in cls.options if f"`{key}`" not in text]
        assert not missing, f"docs/backends/{name}.md does not mention option(s) {missing}"


def test_every_benchmark_is_documented():
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "benchmarks").glob("*.py")) if p.name not in text]
    assert not missing, f"docs/benchmarks.md does not describe {missing}"


def test_images_are_small_and_used():
    used = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    for image in sorted((DOCS / "img").glob("*")):
        assert image.stat().st_size < 150_000, f"{image.name} is {image.stat().st_size} bytes (keep images < 150 KB)"
        assert image.name in used, f"docs/img/{image.name} is not shown on any page"


def update() -> list[str]:
    """Rewrite every generated block from the code; returns the pages changed."""
    changed = []
    for (page, key), body in expected_blocks().items():
        path = DOCS / page
        text = path.read_text(encoding="utf-8")

        def replace(match: re.Match, key: str = key, body: str = body) -> str:
            if match.group("key") != key:
                return match.group(0)
            return match.group("begin") + body + match.group("end")

        new = GENERATED.sub(replace, text)
        if key not in _generated_in(path):
            raise SystemExit(f"docs/{page} has no '<!-- BEGIN generated: {key} -->' marker to fill")
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        sys.path.insert(0, str(ROOT))
        os.chdir(ROOT)
        print("updated:", ", ".join(update()) or "nothing")
    else:
        print("usage: python tests/test_docs.py --update   (rewrite the generated blocks of docs/ from the code)")
