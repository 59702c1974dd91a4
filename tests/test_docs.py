"""README is the guide and docs/ the manual: every relative link lands on a file (and heading),
README stays short and links every docs page, and every command the docs show names a script of
the repository with flags that script accepts (python entry points are asked with `--help`; the
shell scripts that forward their flags to one are checked against it). Python examples compile."""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Shell scripts that hand their flags to a python entry point (after their own positional arguments).
FORWARDS = {"demo.sh": "demo.py", "reproduce_paper.sh": "reproduce_paper.py",
            "finetune_bert.sh": "run_glue.py", "finetune_albert.sh": "run_glue.py",
            "patience_infer_bert.sh": "run_glue.py", "patience_infer_albert.sh": "run_glue.py"}
ENTRY = re.compile(r"(?:benchmarks/|scripts/)?[\w.-]+\.(?:py|sh)")  # a path a command may run
LAUNCHERS = {"python", "python3", ".venv/bin/python", "$PYTHON", "bash", "sh", "torchrun", "exec"}
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")


def rel(path):
    return str(path.relative_to(ROOT))


def fenced_blocks(text):
    """[(language, first line number, [lines])] of the ``` blocks, each dedented by its fence's indent."""
    blocks, lines, open_block = [], text.splitlines(), None
    for number, line in enumerate(lines, 1):
        fence = re.match(r"^(\s*)(```+)\s*([\w+-]*)\s*$", line)
        if open_block is None and fence:
            open_block = (fence.group(3), number + 1, len(fence.group(1)), fence.group(2), [])
        elif open_block is not None and line.strip() == open_block[3]:
            blocks.append((open_block[0], open_block[1], open_block[4]))
            open_block = None
        elif open_block is not None:
            open_block[4].append(line[open_block[2]:] if not line[:open_block[2]].strip() else line.lstrip())
    assert open_block is None, "a ``` block is never closed"
    return blocks


def prose(text):
    """The text outside ``` blocks (fenced lines blanked, so line numbers stay)."""
    out, inside = [], None
    for line in text.splitlines():
        fence = re.match(r"^\s*(```+)", line)
        if fence and (inside is None or line.strip() == inside):
            inside = fence.group(1) if inside is None else None
            out.append("")
        else:
            out.append("" if inside else line)
    return out


def slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    found, seen = set(), {}
    for line in prose(path.read_text()):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


def links(path):
    """(line number, target) of every markdown link and image outside code."""
    for number, line in enumerate(prose(path.read_text()), 1):
        for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", re.sub(r"`[^`]*`", "", line)):
            yield number, target


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_relative_link_lands_on_a_file_and_heading(doc):
    for number, target in links(doc):
        if re.match(r"^[a-z][\w+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        where = (doc.parent / file).resolve() if file else doc
        assert where.exists(), f"{rel(doc)}:{number}: {target} does not exist"
        if anchor:
            assert where.suffix == ".md" and anchor in anchors(where), f"{rel(doc)}:{number}: no heading #{anchor}"


def test_readme_is_the_guide_and_links_every_docs_page():
    assert len(README.read_text().splitlines()) <= 250
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in links(README)}
    pages = {p.resolve() for p in DOCS[1:]}
    assert len(pages & linked) >= 3
    assert pages <= linked, f"docs pages README does not link: {sorted(rel(p) for p in pages - linked)}"


@functools.lru_cache(maxsize=None)
def accepted_flags(script):
    """The --flags a script takes: a python entry point's --help; a shell script's, its forward's or
    the --flags of its header comment (its usage line)."""
    if script.endswith(".sh"):
        if Path(script).name in FORWARDS:
            return accepted_flags(FORWARDS[Path(script).name])
        header = re.match(r"(?:#.*\n|\s*\n)*", (ROOT / script).read_text()).group(0)
        return frozenset(FLAG.findall(header))
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{script} --help: {done.stderr[-2000:]}"
    options = [re.split(r"\s{2,}", line.strip())[0] for line in done.stdout.splitlines() if re.match(r"^  -", line)]
    return frozenset(flag for option in options for flag in FLAG.findall(option))


def target(script):
    """The python entry point whose flags a script takes, or the script itself."""
    return FORWARDS.get(Path(script).name, script)


def segments(line):
    """The simple commands of a shell line (split at | ; & outside quotes), comments dropped."""
    parts, current, quote = [], "", None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            break
        elif char in "|;&":
            parts.append(current)
            current = ""
            continue
        current += char
    return [p for p in parts + [current] if p.strip()]


def words(segment):
    try:
        return shlex.split(segment)
    except ValueError:
        return segment.split()


def flags_after(tokens):
    return [m.group(1) for t in tokens for m in [re.match(r"^\[?(--[A-Za-z][\w-]*)", t)] if m]


def command_lines(language, lines):
    """Logical command lines of a shell block: continuations joined; `console` blocks: `$ ` lines only."""
    joined, buffer, prompt_only = [], None, language == "console"
    for line in lines:
        if buffer is None:
            if prompt_only and not line.startswith("$ "):
                continue
            buffer = line[2:] if prompt_only else line
        else:
            buffer += " " + line.strip()
        if buffer.endswith("\\"):
            buffer = buffer[:-1]
        else:
            joined.append(buffer)
            buffer = None
    return joined + ([buffer] if buffer else [])


def check_block(where, language, lines):
    """Problems of one shell block: scripts that do not exist, flags their entry point refuses."""
    problems, orphans, targets = [], [], set()
    for line in command_lines(language, lines):
        for segment in segments(line):
            tokens = words(segment)
            found = next((i for i, t in enumerate(tokens) if not t.startswith("-") and "=" not in t
                          and ENTRY.fullmatch(t.removeprefix("./"))), None)
            if found is None:
                orphans += FLAG.findall(segment)
                continue
            script = tokens[found].removeprefix("./")
            if not (ROOT / script).is_file():
                problems.append(f"{where}: {script} does not exist")
                continue
            targets.add(target(script))
            bad = set(flags_after(tokens[found + 1:]))
            bad = bad - accepted_flags(script) if bad else bad
            problems += [f"{where}: {script} does not take {flag}" for flag in sorted(bad)]
    if orphans and len(targets) == 1:  # flags on lines of their own (a loop's strings, a wrapped synopsis)
        script = targets.pop()
        problems += [f"{where}: {script} does not take {flag}" for flag in sorted(set(orphans) - accepted_flags(script))]
    return problems


def resolve_inline(token):
    """An inline span's command word as a script of the repository (a bare benchmarks name too), or None."""
    token = token.removeprefix("./")
    if ENTRY.fullmatch(token) and (ROOT / token).is_file():
        return token
    if re.fullmatch(r"[\w.-]+\.(?:py|sh)", token) and (ROOT / "benchmarks" / token).is_file():
        return f"benchmarks/{token}"
    return None


def check_inline(where, span):
    """An inline `command` whose command word (after VAR=x and python/bash/torchrun) is a script."""
    problems = []
    for segment in segments(span):
        tokens = words(segment)
        i = 0
        while i < len(tokens) and (re.fullmatch(r"\w+=.*", tokens[i]) or tokens[i] in LAUNCHERS
                                   or (tokens[i].startswith("-") and i and tokens[0] == "torchrun")
                                   or (i and tokens[i - 1].startswith("--nproc"))):
            i += 1
        script = resolve_inline(tokens[i]) if i < len(tokens) else None
        if script and flags_after(tokens[i + 1:]):
            bad = set(flags_after(tokens[i + 1:])) - accepted_flags(script)
            problems += [f"{where}: `{span}`: {script} does not take {flag}" for flag in sorted(bad)]
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_command_in_the_docs_runs_a_script_with_flags_it_takes(doc):
    text, problems = doc.read_text(), []
    for language, first, lines in fenced_blocks(text):
        if language in SHELL_BLOCKS:
            problems += check_block(f"{rel(doc)}:{first}", language, lines)
    for number, line in enumerate(prose(text), 1):
        for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", line):
            problems += check_inline(f"{rel(doc)}:{number}", span)
        assert not re.match(r"^ {4,}\S.*\.(py|sh)\b", line) or line.lstrip().startswith(("-", "|")), (
            f"{rel(doc)}:{number}: an indented command; put it in a ```bash block so that it is checked")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_python_examples_compile(doc):
    for language, first, lines in fenced_blocks(doc.read_text()):
        if language in ("python", "py"):
            compile("\n".join(lines), f"{rel(doc)}:{first}", "exec")


def test_the_forwarding_scripts_hand_their_flags_to_their_entry_point():
    for script, entry in FORWARDS.items():
        text = (ROOT / script).read_text()
        if "scripts/classic.sh" in text:
            text += (ROOT / "scripts" / "classic.sh").read_text()
        assert entry in text and '"$@"' in text, script


def test_the_checker_catches_a_bad_flag_and_a_missing_script():
    good = ["./patience_infer_albert.sh MRPC 50 --per_gpu_eval_batch_size 32"]
    assert check_block("x", "bash", good) == []
    assert check_block("x", "bash", ["./patience_infer_albert.sh MRPC 50 --per_gpu_eval_size 32"])
    assert check_block("x", "bash", ["CUDA_VISIBLE_DEVICES=0 .venv/bin/python run_glue.py \\", "  --no_such_flag"])
    assert check_block("x", "bash", ["for c in \"a --no_such_flag\"; do", "  python3 predict.py --model_dir M $c", "done"])
    assert check_block("x", "bash", ["bash benchmarks/no_such_script.sh"])
    assert check_block("x", "console", ["$ echo hi | python predict.py --model_dir M", "predict.py: --not_a_command"]) == []
    assert check_inline("x", "torchrun --nproc_per_node 2 run_glue.py --no_such_flag")
    assert check_inline("x", "bench_speed.py --quick") == []
