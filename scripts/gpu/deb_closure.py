#!/usr/bin/python3
"""The Debian packages the GPU build needs and a bare machine lacks: the roots and what they
depend on, recursively, minus the tool chain and the base system (glibc, libstdc++, zlib, ...),
which every machine that builds C++ has, and minus -dev packages other than the roots (their
headers are not included by ours). Prints one package name a line, sorted.

    deb_closure.py ROOT...
"""
import re
import subprocess
import sys

# Not followed: tool chain, base system, other -dev packages, documentation, Fortran, and the
# HDF5 C++/Fortran/high-level libraries (the project uses HDF5's C API only).
SKIP = re.compile(
    r"^(libc6|libc6-dev|libc-dev.*|libgcc-s1|gcc-\d+-base|libstdc\+\+6|gcc.*|g\+\+.*|cpp.*|"
    r"gfortran.*|libgfortran.*|flang.*|.*-dev|libjs-.*|catch2|googletest|perl.*|libperl.*|"
    r"debconf.*|dpkg|tar|libhdf5-openmpi-(fortran|hl|cpp).*|libcrypt1|ssh-client|openssh-client|"
    r"python3.*|mpi-default-.*|libhwloc-plugins|ibverbs-providers|sensible-utils|libselinux1|"
    r"zlib1g|adduser|passwd|libpam.*|libsemanage.*|libsepol.*|libaudit.*|libdb5.3|libcap-ng0|"
    r"libudev1|libuuid1|libbz2-1.0)$")


def depends(pkg):
    r = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                        "--no-breaks", "--no-replaces", "--no-enhances", pkg],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"deb_closure: apt-cache depends {pkg} failed: {r.stderr.strip().splitlines()[-1:]}")
    out = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s+\|?(?:Pre)?Depends: (\S+)", line)
        if m:
            out.append(m.group(1))
    return out


def main():
    roots = sys.argv[1:]
    if not roots:
        sys.exit("usage: deb_closure.py ROOT...")
    seen, keep, todo = set(), [], list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        # <virtual> packages are provided by a real one that is listed too, or by the base system.
        if p.startswith("<") or (p not in roots and SKIP.search(p)):
            continue
        keep.append(p)
        todo.extend(depends(p))
    print("\n".join(sorted(keep)))


if __name__ == "__main__":
    main()
