"""Count the code lines of a package: lines that are not blank, not comments, not docstrings.

Also lists functions longer than ``--max-lines`` code lines and signatures with more than
``--max-params`` parameters (``self``/``cls`` not counted), the package's size rules.

    python scripts/code_lines.py nbhelpers          # total and the rule breakers
    python scripts/code_lines.py nbhelpers -v       # one line per file too
"""

from __future__ import annotations

import argparse
import ast
import io
import pathlib
import tokenize

_SKIP = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def code_lines(source: str) -> set[int]:
    """Line numbers holding code (not blank, comment or docstring)."""
    docs = _docstring_lines(ast.parse(source))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _SKIP:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return lines


def _n_params(node: ast.FunctionDef) -> int:
    a = node.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
    return n - (1 if a.args and a.args[0].arg in ("self", "cls") else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="nbhelpers")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--max-lines", type=int, default=60)
    parser.add_argument("--max-params", type=int, default=8)
    args = parser.parse_args()
    total, files, long_funcs, wide = 0, [], [], []
    for path in sorted(pathlib.Path(args.root).rglob("*.py")):
        source = path.read_text()
        lines = code_lines(source)
        total += len(lines)
        files.append((len(lines), str(path)))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = sum(node.lineno <= n <= node.end_lineno for n in lines)
                if size > args.max_lines:
                    long_funcs.append(f"{path}:{node.name} ({size} lines)")
                if _n_params(node) > args.max_params:
                    wide.append(f"{path}:{node.name} ({_n_params(node)} parameters)")
    if args.verbose:
        for size, name in sorted(files):
            print(f"{size:6d}  {name}")
    print(f"{len(files)} files, {total} code lines")
    print(f"functions over {args.max_lines} code lines: {long_funcs or 'none'}")
    print(f"signatures over {args.max_params} parameters: {wide or 'none'}")


if __name__ == "__main__":
    main()
