# Sourced: `source scripts/gpu/env.sh PREFIX`. Makes the Debian packages unpacked in PREFIX (by
# scripts/gpu/build.sh) usable without installing them: their libraries, Open MPI relocated to the
# prefix (OPAL_PREFIX), pkg-config reading only the prefix's .pc files, mpirun as root.
_teap_prefix=${1:?usage: source scripts/gpu/env.sh PREFIX}
[ -d "$_teap_prefix/usr/lib/x86_64-linux-gnu" ] || { echo "env.sh: $_teap_prefix holds no unpacked packages" >&2; return 2; }
_teap_lib="$_teap_prefix/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$_teap_lib:$_teap_lib/openmpi/lib:$_teap_lib/hdf5/openmpi${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$_teap_prefix/usr/bin:$PATH"
export OPAL_PREFIX="$_teap_prefix/usr"
# Open MPI's compiled-in paths under /usr/lib/x86_64-linux-gnu/openmpi and /usr/share/openmpi,
# relative to OPAL_PREFIX.
export OPAL_LIBDIR="$_teap_lib/openmpi/lib"
export OPAL_INCLUDEDIR="$_teap_lib/openmpi/include"
export OPAL_DATADIR="$_teap_prefix/usr/share/openmpi"
export OPAL_PKGDATADIR="$_teap_prefix/usr/share/openmpi"
export OPAL_SYSCONFDIR="$_teap_prefix/etc/openmpi"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PKG_CONFIG_LIBDIR="$_teap_lib/pkgconfig:$_teap_prefix/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$_teap_prefix"
unset _teap_lib _teap_prefix
