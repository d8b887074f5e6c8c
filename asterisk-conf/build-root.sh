#!/usr/bin/env bash
# Build, once, the Debian unstable root that runs Asterisk 22 for tests and the demo.
#
# Usage: asterisk-conf/build-root.sh [ROOT]
#   ROOT defaults to ${HOTLINE_CACHE:-/var/cache/hotline}/asterisk-root, outside the clone.
#
# The root is built in a temporary sibling folder and renamed into place only after every
# check passed, so an interrupted build is never taken for a finished one. A finished root
# carries the marker file ROOT/.hotline-asterisk-version with the installed package version.
# An existing root without the marker is adopted when it holds Asterisk 22.
# Needs root privileges (debootstrap and chroot).

set -euo pipefail

readonly REQUIRED_MAJOR=22
readonly PACKAGES=asterisk,asterisk-modules,asterisk-core-sounds-en
readonly SUITE=sid
readonly MARKER_NAME=.hotline-asterisk-version

cache_dir="${HOTLINE_CACHE:-/var/cache/hotline}"
root="${1:-$cache_dir/asterisk-root}"
marker="$root/$MARKER_NAME"

log() { printf 'build-root: %s\n' "$*" >&2; }
die() { printf 'build-root: error: %s\n' "$*" >&2; exit 1; }

# Print the dpkg version of asterisk installed in the root given as $1, or nothing.
installed_version() {
    dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Version}' asterisk 2>/dev/null || true
}

# Print the major version of a Debian version string such as 1:22.10.1+dfsg-1.
major_of() {
    local version="${1#*:}"
    printf '%s' "${version%%.*}"
}

# Succeed when the root given as $1 holds a runnable Asterisk of the required major version.
is_valid_root() {
    local candidate="$1" version
    version="$(installed_version "$candidate")"
    [[ -n "$version" ]] || return 1
    [[ "$(major_of "$version")" == "$REQUIRED_MAJOR" ]] || return 1
    [[ -x "$candidate/usr/sbin/asterisk" ]] || return 1
    chroot "$candidate" /usr/sbin/asterisk -V >/dev/null 2>&1
}

# Print the first Debian mirror URI configured for apt on this machine.
read_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        # A line reads "deb [options] URI suite components"; skip the optional [options].
        uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } }' \
            /etc/apt/sources.list)"
    fi
    printf '%s' "$uri"
}

# Make the root given as $1 ready for Asterisk instances, whether freshly built or adopted.
prepare_root() {
    local target="$1"

    # debootstrap copies the host's resolv.conf. An empty one means no module inside the
    # root can send a DNS query anywhere.
    rm -f "$target/etc/resolv.conf"
    : > "$target/etc/resolv.conf"

    mkdir -p "$target/var/run/asterisk" "$target/var/log/asterisk" \
        "$target/var/spool/asterisk" "$target/var/cache/asterisk" "$target/var/lib/hotline"
}

write_marker() {
    local target="$1" version
    version="$(installed_version "$target")"
    printf '%s\n' "$version" > "$target/$MARKER_NAME.tmp"
    mv "$target/$MARKER_NAME.tmp" "$target/$MARKER_NAME"
}

[[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap and chroot need it)"

mkdir -p "$(dirname "$root")"

# Serialize concurrent runs, for example two test sessions starting at once.
exec 9>"$root.lock"
flock 9

# 1. A finished root: nothing to do.
if [[ -f "$marker" ]] && is_valid_root "$root"; then
    log "root already built at $root (asterisk $(cat "$marker")); nothing to do"
    exit 0
fi

# 2. A root built earlier without the marker: adopt it when it holds Asterisk 22.
if [[ -d "$root" ]]; then
    if is_valid_root "$root"; then
        prepare_root "$root"
        write_marker "$root"
        log "adopted existing root at $root (asterisk $(cat "$marker"))"
        exit 0
    fi
    found="$(installed_version "$root")"
    die "$root exists but does not hold a runnable Asterisk $REQUIRED_MAJOR (found: ${found:-no asterisk package}); remove it and run this script again"
fi

# 3. Build a new root in a temporary sibling folder.
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get install -y debootstrap >&2
fi

mirror="$(read_mirror)"
[[ -n "$mirror" ]] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"

# Partial folders of interrupted earlier runs are safe to remove while the lock is held.
rm -rf "$root".partial.*
partial="$root.partial.$$"
trap 'rm -rf "$partial"' EXIT

log "building $SUITE root with $PACKAGES from $mirror into $partial (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$partial" "$mirror" >&2

version="$(installed_version "$partial")"
[[ -n "$version" ]] || die "debootstrap finished but asterisk is not installed in $partial"
[[ "$(major_of "$version")" == "$REQUIRED_MAJOR" ]] \
    || die "Debian $SUITE installed asterisk $version, but this project needs major version $REQUIRED_MAJOR"
is_valid_root "$partial" || die "asterisk $version is installed in $partial but 'asterisk -V' fails inside the chroot"

prepare_root "$partial"
write_marker "$partial"
mv "$partial" "$root"
trap - EXIT
log "root ready at $root (asterisk $version)"
