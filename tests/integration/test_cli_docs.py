"""The CLI's man page and bash completion, both generated from the command
tables --help comes from (src/cli/manpage.c, src/cli/complete.c), as
`meson install` puts them; and --help's columns."""

import os
import re
import subprocess

from harness import QSNAP, check, qsnap
from test_embed import install


def commands():
    listing = qsnap("--help").stdout.split("Commands:\n")[1].split("\n\n")[0]
    return re.findall(r"^  ([a-z-]+) ", listing, re.M)


def options(cmd):
    """The long options qsnap CMD --help describes (as its parser takes
    them: test_foundation.test_usage_lines_match_parsers)."""
    rest = qsnap(cmd, "--help").stdout.partition("\n\n")[2]
    return set(re.findall(r"^  (?:-[a-zA-Z], )?(--[a-z-]+)", rest, re.M))


def test_help_columns(t):
    listing = qsnap("--help").stdout.split("Commands:\n")[1].split("\n\n")[0]
    starts = {len(m.group(1)) for m in re.finditer(r"^(  [a-z-]+ +)\S", listing, re.M)}
    check(len(starts) == 1, f"qsnap --help: the summaries start in columns {sorted(starts)}:\n"
          f"{listing}")


def test_man_page(t):
    dest, _ = install(t)
    pages = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs if f == "qsnap.1"]
    check(len(pages) == 1 and pages[0].endswith("/share/man/man1/qsnap.1"),
          f"meson install put qsnap.1 at {pages}")
    p = subprocess.run(["man", "--warnings", "-l", pages[0]], capture_output=True, text=True,
                       env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "200", "LC_ALL": "C"})
    check(p.returncode == 0 and "QSNAP(1)" in p.stdout, f"man -l {pages[0]}: {p.stderr}")
    check(not p.stderr.strip(), f"groff warns about qsnap.1: {p.stderr}")
    text = p.stdout
    # Each command has its section, listing every option its parser takes.
    heads = list(re.finditer(r"^   qsnap ([a-z-]+) ", text, re.M))
    found = [m.group(1) for m in heads]
    check(found == commands(), f"the man page's commands {found}, --help's {commands()}")
    for i, m in enumerate(heads):
        section = text[m.start():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        missing = [o for o in options(m.group(1)) if not re.search(r"^ +(-\w, )?" + o + r"\b",
                                                                   section, re.M)]
        check(not missing, f"the man page's qsnap {m.group(1)} lacks {missing}")


def complete(script, *words):
    """What bash offers for the last of words, through the installed
    completion script (sourced in bash -c, COMP_WORDS/COMP_CWORD set)."""
    p = subprocess.run(["bash", "-c", 'source "$1"; shift; COMP_WORDS=("$@"); '
                        'COMP_CWORD=$(( $# - 1 )); _qsnap; printf "%s\\n" "${COMPREPLY[@]}"',
                        "_", script, QSNAP, *words], capture_output=True, text=True)
    check(p.returncode == 0, f"completion of {words}: {p.stderr}")
    return sorted(w for w in p.stdout.split("\n") if w)


def test_completion(t):
    dest, _ = install(t)
    scripts = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs
               if r.endswith("/share/bash-completion/completions")]
    check(len(scripts) == 1 and scripts[0].endswith("/qsnap"),
          f"meson install put the completion at {scripts}")
    script = scripts[0]
    check(complete(script, "d") == ["delete", "dump-memory"], complete(script, "d"))
    check(complete(script, "") == sorted(commands()), complete(script, ""))
    check(complete(script, "save", "vm", "--li") == ["--live"],
          complete(script, "save", "vm", "--li"))
    check(set(complete(script, "restore", "vm", "--")) == options("restore") | {"--help"},
          complete(script, "restore", "vm", "--"))
    check(complete(script, "init", "vm", "--ram-mode", "") == ["shared", "stream"],
          complete(script, "init", "vm", "--ram-mode", ""))
    vm = t.vm()
    vm.boot()
    vm.save("alpha")
    vm.save("beta-2")
    names = complete(script, "restore", vm.dir, "")
    check(names == ["alpha", "beta-2"], f"restore VMDIR <TAB>: {names}")
    check(complete(script, "delete", vm.dir, "be") == ["beta-2"],
          complete(script, "delete", vm.dir, "be"))
    check(complete(script, "start", vm.dir, "--from", "a") == ["alpha"],
          complete(script, "start", vm.dir, "--from", "a"))
    check(complete(script, "restore", "--timeout", "5", vm.dir, "") == ["alpha", "beta-2"],
          "an option with its value before VMDIR")
    # VMDIR completes to directories.
    parent = os.path.dirname(vm.dir)
    got = complete(script, "status", parent + "/")
    check(vm.dir in got, f"status <TAB> in {parent}: {got}")
