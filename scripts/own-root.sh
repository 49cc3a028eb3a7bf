# Sourced by demo.sh and test.sh after the set-up: `own_root "$0" "$@"`.
#
# Unprivileged containers need user namespaces, and the kernel gives none to a process in a chroot
# (a fresh machine built with debootstrap and entered with `chroot`). Then the rest of the script runs
# in a mount namespace of its own whose root *is* this directory (pivot_root, as a container runtime
# or switch_root does), which the kernel does not count as a chroot. Everything still runs on this
# root's files; on a real machine (or anywhere user namespaces work) this does nothing.
own_root() {
  [ -n "${PINCUS_OWN_ROOT:-}" ] && return 0
  unshare --user true 2>/dev/null && return 0
  local script=$1 outside here
  shift
  # A process whose root is not ours (an ancestor outside the chroot): where our root is, seen from it.
  outside=$(python3 - "$$" <<'EOF'
import os, sys

def ident(path):
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        with open(f"/proc/self/fdinfo/{fd}") as f:
            mnt = next((line.split()[1] for line in f if line.startswith("mnt_id:")), "")
        return (st.st_dev, st.st_ino, mnt)
    finally:
        os.close(fd)

mine, pid = ident("/"), int(sys.argv[1])
while pid > 1:
    try:
        if ident(f"/proc/{pid}/root") != mine:
            print(pid)
            break
        with open(f"/proc/{pid}/status") as f:
            pid = int(next(line.split()[1] for line in f if line.startswith("PPid:")))
    except (OSError, StopIteration, ValueError):
        break
EOF
)
  if [ -z "$outside" ]; then
    echo "own-root: this process gets no user namespace and no root of its own could be made;" \
         "unprivileged containers will not start here" >&2
    return 0
  fi
  here=$(chroot "/proc/$outside/root" readlink "/proc/$$/root")
  echo "own-root: no user namespaces in this chroot ($here): going on in a mount namespace rooted there" >&2
  exec chroot "/proc/$outside/root" unshare --mount --propagation private /bin/sh -c '
    set -e
    mount --rbind "$1" "$1"
    cd "$1"
    mkdir -p .pincus-own-root-old
    pivot_root . .pincus-own-root-old
    cd /
    umount -l /.pincus-own-root-old
    rmdir /.pincus-own-root-old
    cd "$2"
    shift 2
    PINCUS_OWN_ROOT=1 exec "$@"' own-root "$here" "$PWD" bash "$script" "$@"
}
