"""The documents hold: README.md, CHANGELOG.md and docs/*.md.

* every ```python block runs, in a fresh namespace and an empty temporary working folder (a block
  preceded by ``<!-- docs-test: skip (reason) -->`` is not run; the reason is required);
* every relative link and image points to an existing file, and a link's ``#anchor`` to a heading
  (GitHub's slugs) or an ``<a id>`` of the target page;
* every ``crossbar ...`` command they quote (shell blocks and inline code) names real subcommands
  and options of the CLI's parser, every ``make X`` a Makefile target, every quoted script exists
  and has the options given to it;
* docs/configuration.md equals what scripts/make_config_reference.py generates from the schema.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
SHELL = {"bash", "sh", "shell", "console", ""}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def blocks(path: Path) -> list[dict]:
    """Fenced code blocks: language, code, first line number, skip reason (or None)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group("fence"), m.group("info").strip().split(" ")[0].lower()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i].removeprefix(m.group("indent")))
            i += 1
        prev = next((lines[k] for k in range(start - 2, -1, -1) if lines[k].strip()), "")
        skip = SKIP.search(prev)
        out.append(
            {
                "lang": lang,
                "code": "\n".join(body) + "\n",
                "line": start + 1,
                "skip": skip.group("reason").strip() if skip else None,
                "skip_marker": "docs-test" in prev,
            }
        )
        i += 1
    return out


def prose(path: Path) -> str:
    """The text outside fenced code blocks (fences replaced by blank lines)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    keep, fence = [], None
    for line in lines:
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group("fence")
            keep.append("")
        elif fence is not None and line.strip().startswith(fence):
            fence = None
            keep.append("")
        else:
            keep.append("" if fence is not None else line)
    return "\n".join(keep)


def inline_code(text: str) -> list[str]:
    """Inline code spans of Markdown text (single backticks; a span may wrap a line)."""
    spans = re.findall(r"(?<!`)`([^`]+)`(?!`)", text)
    return [" ".join(s.replace("\\|", "|").split()) for s in spans]  # a table cell escapes | as \|


PY_BLOCKS = [
    pytest.param(path, b, id=f"{_rel(path)}:{b['line']}")
    for path in DOCS
    for b in blocks(path)
    if b["lang"] in ("python", "py")
]


def test_the_readme_has_python_examples_to_run():
    assert any(p.values[0].name == "README.md" for p in PY_BLOCKS), (
        "README.md has no ```python block (or the parser broke)"
    )


@pytest.mark.parametrize("path,block", PY_BLOCKS)
def test_python_block_runs(path, block, tmp_path, monkeypatch):
    if block["skip_marker"] and not block["skip"]:
        pytest.fail(
            f"{_rel(path)}:{block['line']}: a docs-test skip marker needs a reason: <!-- docs-test: skip (reason) -->"
        )
    if block["skip"]:
        pytest.skip(f"{_rel(path)}:{block['line']}: {block['skip']}")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the examples are tiny; more threads only wait on each other on a busy machine
    monkeypatch.chdir(tmp_path)
    try:
        code = compile(block["code"], f"{_rel(path)}:{block['line']}", "exec")
        exec(code, {"__name__": "__docs__"})
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ links
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images -> their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = text.replace("**", "")
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = prose(path)
    found: set[str] = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    counts: dict[str, int] = {}
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE):
        s = slug(m.group(1))
        n = counts.get(s, 0)
        found.add(s if n == 0 else f"{s}-{n}")
        counts[s] = n + 1
    return found


#: Pages that are linked while another change is still writing them: a link to one of them that
#: does not exist yet is an expected failure, not an error.  Delete an entry once its page is in.
PENDING_PAGES = {REPO / "docs" / "parasitics.md"}

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(path: Path) -> list[str]:
    text = re.sub(r"(?<!`)`[^`]+`(?!`)", "", prose(path))  # not inside inline code
    return LINK.findall(text) + re.findall(r"<img[^>]+src=\"([^\"]+)\"", text)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_relative_links_point_to_existing_files(path):
    bad, pending = [], []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            (pending if dest in PENDING_PAGES else bad).append(f"{target}: no such file {dest}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(f"{target}: {_rel(dest)} has no heading or anchor #{fragment}")
    assert not bad, f"{_rel(path)}: broken links:\n  " + "\n  ".join(bad)
    if pending:
        pytest.xfail(f"{_rel(path)} links pages still being written: " + "; ".join(sorted(set(pending))))


# --------------------------------------------------------------------------------------- commands
def shell_lines(path: Path) -> list[str]:
    """Command lines of shell (and unlabelled) blocks, continuations joined, comments dropped."""
    out = []
    for b in blocks(path):
        if b["lang"] not in SHELL:
            continue
        joined = re.sub(r"\\\n\s*", " ", b["code"])
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#\s.*$", "", line).strip()
            if line:
                out.append(line)
    return out


def crossbar_commands(path: Path) -> list[str]:
    """Every quoted ``crossbar ...`` command: in shell blocks and inline code."""
    found = []
    pattern = re.compile(r"^(?:\$\s*)?(?:\S*/)?crossbar\s+(.*)$")
    for text in shell_lines(path) + inline_code(prose(path)):
        m = pattern.match(text)
        if m and not text.startswith(("crossbar/", "crossbar.")):
            found.append(m.group(1))
    return found


def _choices(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return None


def _options(parser) -> set[str]:
    return set(parser._option_string_actions)


def _check_command(root, args: str) -> list[str]:
    """Problems with one quoted command line (subcommands and --options), as messages."""
    tokens = re.split(r"\s+", args.strip())
    options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", args))
    problems: list[str] = []
    parsers = [root]
    rest = tokens
    while rest:
        choices = _choices(parsers[0])
        if choices is None:
            break
        word = rest[0].strip("[]()")
        if word.startswith("-") or word in ("...", "…"):
            if word.startswith("-") and parsers[0] is root:
                break
            parsers = [p for parent in parsers for p in (_choices(parent) or {}).values()]
            break
        alternatives = word.split("|")
        unknown = [w for w in alternatives if w not in choices]
        if unknown:
            problems.append(f"unknown subcommand {'|'.join(unknown)!r} (known: {', '.join(sorted(choices))})")
            return problems
        parsers = [choices[w] for w in alternatives]
        rest = rest[1:]
    for opt in sorted(options):
        if not any(opt in _options(p) for p in parsers):
            problems.append(f"unknown option {opt}")
    return problems


@pytest.fixture(scope="module")
def parser():
    from rnn_models.cli import build_parser

    return build_parser()


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_quoted_commands_are_real(path, parser):
    bad = []
    for command in crossbar_commands(path):
        for problem in _check_command(parser, command):
            bad.append(f"crossbar {command}: {problem}")
    make_targets = set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
    texts = shell_lines(path) + inline_code(prose(path))
    for text in texts:
        for target in re.findall(r"(?:^|\s)make\s+([A-Za-z][\w-]*)", text):
            if target not in make_targets:
                bad.append(f"make {target}: no such Makefile target")
        for m in re.finditer(
            r"((?:benchmarks|examples|recipes|scripts|tests)/[\w/.-]+\.(?:py|sh))((?:\s+[^\s`|;&]+)*)", text
        ):
            script = REPO / m.group(1)
            if not script.is_file():
                bad.append(f"{m.group(1)}: no such script")
                continue
            body = script.read_text(encoding="utf-8")
            for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2)):
                if opt not in body:
                    bad.append(f"{m.group(1)} {opt}: the script has no such option")
    assert not bad, f"{_rel(path)}: commands that do not exist:\n  " + "\n  ".join(bad)


def test_the_command_check_can_fail(parser):
    assert _check_command(parser, "evaluate kws --data D --config C --mc 2") == []
    assert _check_command(parser, "evaluate kws|lm --split dev") == []
    assert _check_command(parser, "evaluate ... --sweep bits=3,4") == []
    assert _check_command(parser, "evaluate kws --mcc 2") == ["unknown option --mcc"]
    assert _check_command(parser, "evalute kws")[0].startswith("unknown subcommand 'evalute'")
    assert _check_command(parser, "--help") == []


def test_slugs_follow_github():
    assert slug("Measured: Google Speech Commands v0.02") == "measured-google-speech-commands-v002"
    assert slug("The `crossbar` model (`crossbar/`)") == "the-crossbar-model-crossbar"
    assert (
        slug("Measured (`make demo`, rram_nladc_5b, 10 instances x 16 columns)")
        == "measured-make-demo-rram_nladc_5b-10-instances-x-16-columns"
    )


# --------------------------------------------------------------------------- configuration reference
def test_configuration_reference_is_generated_from_the_current_schema():
    spec = importlib.util.spec_from_file_location(
        "make_config_reference", REPO / "scripts" / "make_config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == module.render(), (
        "docs/configuration.md is out of date with the hardware-config schema (crossbar/config.py): "
        "regenerate it with `.venv/bin/python scripts/make_config_reference.py` and commit the result"
    )


def test_every_docs_page_is_linked_from_the_readme():
    readme_links = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md") if "://" not in t}
    missing = [_rel(p) for p in DOCS[1:] if p.resolve() not in readme_links]
    assert not missing, f"README.md does not link {missing}"
