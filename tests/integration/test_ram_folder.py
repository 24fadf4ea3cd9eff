"""The RAM folder (shared-RAM mode): /dev/shm is everyone's, so the
folders on the way to a VM's RAM file (/dev/shm/qsnap-<uid> and the VM's
own) must be the user's, mode 0700 and not symbolic links, else the user
is told which one and why. The test runs qsnap as a user of its own (the
tests run as root; another user's folder is made with os.chown), so that
it never touches the folder of the root user that other tests share."""

# It removes and replaces /dev/shm/qsnap-UID of its own user: its runs on
# the two QEMUs must not overlap.
ALONE = True

import os
import shutil
import subprocess

from harness import QSNAP, check

UID = 23456     # the user qsnap runs as here
OTHER = 12345   # another local user
TOP = f"/dev/shm/qsnap-{UID}"


def as_user(*args):
    p = subprocess.run([QSNAP, *args], capture_output=True, text=True, timeout=300, user=UID,
                       group=UID, env={"PATH": os.environ["PATH"], "HOME": "/"})
    return p


def clear():
    if os.path.islink(TOP) or os.path.isfile(TOP):
        os.unlink(TOP)
    elif os.path.isdir(TOP):
        shutil.rmtree(TOP)


def test_ram_folder_of_another_user_or_a_link(t):
    vm = t.vm(memory="64M", extra_init=("--ram-mode", "shared"))
    os.chmod(t.dir, 0o755)
    for root, dirs, files in os.walk(t.dir):
        for n in dirs + files:
            os.chown(os.path.join(root, n), UID, UID)
    os.chown(t.dir, UID, UID)
    elsewhere = os.path.join(t.dir, "elsewhere")
    os.mkdir(elsewhere, 0o700)
    os.chown(elsewhere, UID, UID)
    try:
        def refused(word, what):
            p = as_user("start", vm.dir)
            check(p.returncode == 1 and p.stderr.count("\n") == 1 and word in p.stderr,
                  f"{what}: {p.returncode} {p.stderr}")
            check(os.listdir(elsewhere) == [], f"{what}: something was made in {elsewhere}")
            st = as_user("status", "--json", vm.dir)
            check('"stopped"' in st.stdout, f"{what}: {st.stdout} {st.stderr}")
            clear()

        clear()
        os.mkdir(TOP, 0o700)
        os.chown(TOP, OTHER, OTHER)
        refused(f"the RAM folder {TOP} belongs to uid {OTHER}, not to this user (uid {UID})",
                "top of another user")
        os.symlink(elsewhere, TOP)
        refused(f"the RAM folder {TOP} is a symbolic link", "top a symlink")
        os.mkdir(TOP, 0o700)
        os.chmod(TOP, 0o777)
        os.chown(TOP, UID, UID)
        refused(f"the RAM folder {TOP} has mode 0777", "top open to all")

        # The VM's own folder inside: of another user, or a link.
        st = os.stat(vm.dir)
        leaf = os.path.join(TOP, f"vm.{st.st_dev:x}.{st.st_ino:x}")
        for kind in ("other", "link"):
            os.mkdir(TOP, 0o700)
            os.chown(TOP, UID, UID)
            if kind == "other":
                os.mkdir(leaf, 0o700)
                os.chown(leaf, OTHER, OTHER)
                refused(f"the RAM folder {leaf} belongs to uid {OTHER}", "leaf of another user")
            else:
                os.symlink(elsewhere, leaf)
                refused(f"the RAM folder {leaf} is a symbolic link", "leaf a symlink")

        # None there: made 0700, the user's, and the VM runs on it.
        p = as_user("start", vm.dir)
        check(p.returncode == 0, f"start as uid {UID}: {p.stderr}")
        for d in (TOP, leaf):
            s = os.lstat(d)
            check(s.st_uid == UID and (s.st_mode & 0o7777) == 0o700 and not os.path.islink(d),
                  f"{d}: uid {s.st_uid} mode {s.st_mode:o}")
        check(os.path.exists(os.path.join(leaf, "ram")), "no RAM file in the VM's folder")
        as_user("stop", vm.dir)
    finally:
        as_user("stop", vm.dir)
        clear()
