"""The shape of the code: the root holds what users run, the library is one package whose imports
run one way (in the order docs/layout.md lists its modules), modules and functions stay short,
no library module sees the parsed flags, and the package logs under its own names."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pabee"
# What a user runs or edits, and what runs the project (CI, the virtual environment).
ROOT_FILES = {"run_glue.py", "predict.py", "serve.py", "export.py", "reproduce_paper.py", "demo.py", "modeling_pabee_bert.py",
              "modeling_pabee_albert.py", "finetune_bert.sh", "finetune_albert.sh", "patience_infer_bert.sh",
              "patience_infer_albert.sh", "reproduce_paper.sh", "demo.sh", "run_tests.sh", "venv.sh",
              "requirements.txt", "pyproject.toml", "README.md", ".gitignore"}
ROOT_FOLDERS = {"pabee", "tests", "benchmarks", "scripts", "docs", ".ci"}
PARSERS = {"build_parser"}  # argument parsers may run long: one line per flag


def tracked(pattern):
    import subprocess

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in files if re.fullmatch(pattern, f)]


def module_name(path):
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def package_modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"}


def package_imports(path):
    """The package's modules a module imports, anywhere in it (also inside functions), as
    `subpackage.module`: `from pabee.data import glue` imports data.glue."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pabee"):
            module = node.module.removeprefix("pabee").removeprefix(".")
            if (PACKAGE / module.replace(".", "/")).is_dir():  # names of a (sub)package's modules
                found |= {f"{module}.{a.name}".lstrip(".") for a in node.names}
            else:
                found.add(module)
        elif isinstance(node, ast.Import):
            found |= {a.name[len("pabee."):] for a in node.names if a.name.startswith("pabee.")}
    return found


def section(title):
    return (ROOT / "docs" / "layout.md").read_text().split(f"\n## {title}\n")[1].split("\n## ")[0]


def layers():
    """The subpackages in docs/layout.md's order, lowest first."""
    return re.findall(r"^\d+\. `pabee/(\w+)/`$", section("Layers"), flags=re.M)


def layout_doc():
    """[(module pattern, imports)] in docs/layout.md's order: `pabee/<package>/<name>.py` (imports a.b, c.d): ..."""
    listed = re.findall(r"^- `pabee/([\w/<>]+)\.py` \(imports ([^)]*)\):", section("Modules"), flags=re.M)
    return [(name.replace("/", "."), set() if imports == "nothing" else set(imports.split(", ")))
            for name, imports in listed]


def test_the_root_holds_what_users_run_and_the_library_is_one_package():
    top = {p.relative_to(ROOT).parts[0] for p in tracked(r".+")}
    assert top <= ROOT_FILES | ROOT_FOLDERS, top - ROOT_FILES - ROOT_FOLDERS
    for classic in ("modeling_pabee_bert.py", "modeling_pabee_albert.py"):  # thin: the class comes from the package
        tree = ast.parse((ROOT / classic).read_text())
        assert not [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))], classic


def test_docs_layout_lists_every_module_with_its_imports_in_the_order_they_run():
    layout = layout_doc()
    modules = package_modules()
    adapters = {m for m in modules if m.startswith("modeling.adapters.")}
    listed = [name for name, _ in layout]
    assert sorted(listed) == sorted([m for m in modules if m not in adapters] + ["modeling.adapters.<backbone>"])
    for position, (name, imports) in enumerate(layout):
        for module in sorted(adapters) if name == "modeling.adapters.<backbone>" else [name]:
            actual = package_imports(modules[module])
            assert actual <= imports, (module, actual - imports)
            assert imports <= set(listed[:position]), (name, "imports a module listed after it")
        if name != "modeling.adapters.<backbone>":
            assert package_imports(modules[name]) == imports, name


def test_the_subpackages_are_layered_and_every_import_points_down():
    order = layers()
    assert sorted(order) == sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert not [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"], "every module sits in a subpackage"
    listed = [name.split(".")[0] for name, _ in layout_doc()]
    assert listed == sorted(listed, key=order.index), "docs/layout.md lists the modules layer by layer"
    for path in PACKAGE.glob("*/**/*.py"):  # the subpackages' __init__ files too
        home = path.relative_to(PACKAGE).parts[0]
        for imported in package_imports(path):
            assert order.index(imported.split(".")[0]) <= order.index(home), (path, imported)


def test_each_subpackage_says_its_concern_and_names_its_entry_points_without_loading_them():
    import importlib
    import subprocess
    import sys

    for package in layers():
        init = PACKAGE / package / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), init
        module = importlib.import_module(f"pabee.{package}")
        for name, home in getattr(module, "ENTRY_POINTS", {}).items():
            assert not (PACKAGE / package / f"{name}.py").exists(), (package, name, "is also a module's name")
            assert getattr(module, name) is getattr(importlib.import_module(f"pabee.{package}.{home}"), name)
    loads = "import sys, pabee." + ", pabee.".join(layers()) + "; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", loads], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_modules_and_functions_stay_short():
    for path in [*PACKAGE.rglob("*.py"), *ROOT.glob("*.py"), *ROOT.glob("benchmarks/*.py")]:
        source = path.read_text()
        assert len(source.splitlines()) <= 350, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name not in PARSERS:
                assert node.end_lineno - node.lineno + 1 <= 50, f"{path.name}: {node.name}"


def test_no_library_module_sees_the_parsed_flags():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "argparse" not in imported or path.name == "cli.py", path  # cli.py formats the scripts' help
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
        assert not names & {"flags", "args", "Namespace"}, (path, names & {"flags", "args", "Namespace"})


def test_each_module_logs_under_its_own_name_and_only_the_entry_points_set_levels():
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        for call in re.findall(r"getLogger\(([^)]*)\)", source):
            assert call == "__name__" or path.name == "logs.py", (path, call)
        if path.name != "logs.py":
            assert not re.search(r"\.setLevel\(|set_verbosity|disable_progress_bars\(\)", source), path
    for entry in ("run_glue.py", "predict.py", "serve.py", "reproduce_paper.py", "demo.py"):
        assert "setup_logging()" in (ROOT / entry).read_text(), entry


def test_the_linter_finds_nothing_in_the_whole_tree():
    """ruff with pyproject.toml's rules (pyflakes and bugbear): names used but never imported, closures
    over loop variables, `zip` that would drop a longer list's tail, ..."""
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                           cwd=ROOT, capture_output=True, text=True)
    assert "No module named ruff" not in found.stderr, "ruff is missing: pip install -r requirements.txt"
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-1000:]
