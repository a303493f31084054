"""The documentation keeps its promises: every relative link and #anchor resolves (GitHub's
heading slugs), every command that runs a script of tools/, benchmarks/ or datasets/ uses flags
that script's argparse accepts, and the code's pointers into benchmarks/RESULTS.md name real
sections."""
import argparse
import functools
import importlib.util
import re
import shlex
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The pages whose links and commands are checked: the README, docs/, the results reference.
PAGES = sorted([ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", ROOT / "sharp_fpn" / "pretrained" / "README.md",
                *(ROOT / "docs").glob("*.md")])
SCRIPT_DIRS = ("tools", "benchmarks", "datasets")


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- Markdown: headings, anchors, links --------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")


def split_fences(text: str):
    """(line number, line, inside a fenced code block, the fence's info string) for every line."""
    inside, info = False, ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            if not inside:
                inside, info = True, line.strip()[3:].strip()
            else:
                inside, info = False, ""
            yield number, line, None, ""  # the fence line itself
            continue
        yield number, line, inside, info


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped except
    '-' and '_', each space a '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)                # code spans keep their text
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)      # links keep their text
    text = re.sub(r"<[^>]+>", "", text)                         # inline HTML
    text = text.strip().lower()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in " -_" or category[0] in "LMN":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset:
    """Every #anchor a Markdown file offers: heading slugs (repeats get -1, -2, ...) and HTML ids."""
    seen, result = {}, set()
    for _, line, inside, _ in split_fences(path.read_text(encoding="utf-8")):
        if inside is not False:
            continue
        for name in re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line):
            result.add(name)
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(result)


LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(path: Path):
    """(line number, target) of every inline link and image outside code blocks and code spans."""
    for number, line, inside, _ in split_fences(path.read_text(encoding="utf-8")):
        if inside is not False:
            continue
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            yield number, target


def link_problem(page: Path, target: str):
    """None if target resolves from page, else what is wrong."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, detectron2:
        return None
    file_part, _, anchor = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    if not destination.exists():
        return "no such file"
    if anchor:
        if destination.suffix != ".md":
            return f"#{anchor}: anchors are only checked in Markdown files"
        if anchor not in anchors(destination):
            return f"#{anchor}: no such heading in {page_id(destination)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_and_anchor_resolves(page):
    problems = [f"{page_id(page)}:{number}: {target}: {problem}" for number, target in links(page)
                if (problem := link_problem(page, target))]
    assert not problems, "\n".join(problems)


def test_github_slugs():
    assert github_slug("Does # beat plain FPN in Mask R-CNN?") == "does--beat-plain-fpn-in-mask-r-cnn"
    assert github_slug("The `pw_dw` form, and UNet++ (VGG16)") == "the-pw_dw-form-and-unet-vgg16"
    assert github_slug("What does the seed's \"IoU\" measure?") == "what-does-the-seeds-iou-measure"


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A\n## Commands\n```\n# not a heading\n```\n## Commands\n")
    assert anchors(page) == {"a", "commands", "commands-1"}


# Pointers from code and configs into the results reference, written as RESULTS.md#anchor.
POINTER = re.compile(r"RESULTS\.md#([A-Za-z0-9_-]+)")
SOURCE_GLOBS = ("sharp_fpn/**/*.py", "tools/*.py", "benchmarks/*.py", "datasets/*.py", "scripts/*", "configs/*.yaml",
                "tests/*.py")


def test_pointers_into_results_md_name_real_sections():
    results = ROOT / "benchmarks" / "RESULTS.md"
    problems = []
    for pattern in SOURCE_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            if not path.is_file() or path == Path(__file__):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                problems += [f"{page_id(path)}:{number}: #{a}" for a in POINTER.findall(line) if a not in anchors(results)]
    assert not problems, "no such section in benchmarks/RESULTS.md:\n" + "\n".join(problems)


# --- Command blocks: flags against each script's argparse ---------------------------------------

SCRIPT = re.compile(r"(?:^|/)((?:%s)/[\w.-]+\.py)$" % "|".join(SCRIPT_DIRS))
SHELL_INFOS = ("", "bash", "sh", "shell", "console")


def commands(path: Path):
    """(line number, logical command line) of every shell code block: continuations joined."""
    pending, start = "", 0
    for number, line, inside, info in split_fences(path.read_text(encoding="utf-8")):
        if not inside or info not in SHELL_INFOS:
            if pending:
                yield start, pending
            pending = ""
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def script_calls(line: str):
    """(script path, [flags]) for every tools/, benchmarks/ or datasets/ script the line runs."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes: not a shell line (e.g. program output)
        return
    words = words[:next((i for i, w in enumerate(words) if w.startswith("#")), len(words))]  # a trailing comment
    for i, word in enumerate(words):
        match = SCRIPT.search(word)
        if not match:
            continue
        flags = []
        for after in words[i + 1:]:
            if after in (";", "&&", "||", "|", "&", ")") or SCRIPT.search(after):
                break
            if after.startswith("--") and len(after) > 2:
                flags.append(after.split("=", 1)[0])
        yield match.group(1), flags


class _Parsed(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


@functools.lru_cache(maxsize=None)
def accepted_flags(script: str) -> frozenset:
    """Every option string of the script's argparse parser (subcommands included), got without
    running the script: its parser function if it has one, else its main() up to parse_args."""
    path = ROOT / script
    spec = importlib.util.spec_from_file_location(f"_docs_check_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    parser = None
    for name in ("get_parser", "build_parser", "make_parser", "parser"):
        if callable(getattr(module, name, None)):
            candidate = getattr(module, name)()
            if isinstance(candidate, argparse.ArgumentParser):
                parser = candidate
                break
    if parser is None:
        def capture(self, *args, **kwargs):
            raise _Parsed(self)

        original = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
        argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = capture
        try:
            for name in ("parse_args", "main"):
                entry = getattr(module, name, None)
                if callable(entry):
                    try:
                        entry([]) if entry.__code__.co_argcount else entry()
                    except _Parsed as parsed:
                        parser = parsed.parser
                        break
        finally:
            argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = original
    assert parser is not None, f"{script}: no argparse parser found"
    return frozenset(option_strings(parser))


def option_strings(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from option_strings(sub)


def documented_calls():
    for page in PAGES:
        for number, line in commands(page):
            for script, flags in script_calls(line):
                yield page, number, script, flags


def test_command_lines_are_found():
    calls = list(documented_calls())
    assert {"tools/train_net.py", "tools/predict.py", "datasets/prepare_dsb2018.py"} <= {c[2] for c in calls}
    assert list(script_calls("python tools/predict.py a/ --all --tile-size=512 # --not-this")) == \
        [("tools/predict.py", ["--all", "--tile-size"])]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_commands_use_flags_their_scripts_accept(page):
    problems = []
    for number, line in commands(page):
        for script, flags in script_calls(line):
            if not (ROOT / script).is_file():
                problems.append(f"{page_id(page)}:{number}: {script}: no such script")
                continue
            unknown = [flag for flag in flags if flag not in accepted_flags(script)]
            if unknown:
                problems.append(f"{page_id(page)}:{number}: {script} does not accept {', '.join(unknown)}")
    assert not problems, "\n".join(problems)
