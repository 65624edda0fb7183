# Shared helpers for the scripts under scripts/ (sourced, not run).
# Callers set `set -euo pipefail` and `script_name` before sourcing.

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
podvisor_cache="${PODVISOR_CACHE:-$HOME/.cache/podvisor}"

die() { echo "${script_name:-podvisor}: error: $*" >&2; exit 1; }
log() { echo "${script_name:-podvisor}: $*" >&2; }

# Run a command as root (directly, or through sudo when available).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo > /dev/null; then
        sudo "$@"
    else
        die "'$*' needs root and sudo is not installed"
    fi
}

# True on hosts whose /dev/kvm is PVM (KVM without hardware virtualization), where Linux only
# gets through early boot.
kvm_is_pvm() { [[ -d /sys/module/kvm_pvm ]]; }

# Export the PODVISOR_KIT_* variables of the guest kit (building it when needed).
# Returns non-zero when the kit cannot be built.
load_guest_kit() {
    local env_lines line
    env_lines="$("$repo_root/scripts/guest-kit")" || return 1
    while IFS= read -r line; do
        [[ "$line" == PODVISOR_KIT_*=* ]] || continue
        export "${line?}"
    done <<< "$env_lines"
    [[ -n "${PODVISOR_KIT_DIR:-}" ]]
}

# Print the cargo target directory in use (CARGO_TARGET_DIR or the workspace's target/).
cargo_target_dir() {
    if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
        echo "$CARGO_TARGET_DIR"
    else
        echo "$repo_root/target"
    fi
}

# Die unless the file system holding $1 (or its nearest existing parent) has $2 GiB free: a full
# disk otherwise shows up as unrelated test failures half-way through a run.
require_free_space() {
    local dir="$1" need_gib="$2" avail_kib
    while [[ ! -e "$dir" ]]; do dir="$(dirname "$dir")"; done
    avail_kib="$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')"
    if (( avail_kib < need_gib * 1024 * 1024 )); then
        die "only $(( avail_kib / 1024 / 1024 )) GiB free under $dir; a build and test run needs about $need_gib GiB"
    fi
}
