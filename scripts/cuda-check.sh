#!/usr/bin/env bash
# Compile-checks pm-memory's CUDA kernels (`--features cuda`) on a Debian machine without a
# CUDA toolkit, and runs them against the CPU oracle when a GPU is present. Not run by CI.
#
# What it does (as root, or through sudo when it is not root):
#   1. adds Debian's `contrib non-free non-free-firmware` components for the installed release
#      when no apt source has `non-free` yet (a new file, /etc/apt/sources.list.d/
#      pm-cuda-nonfree.sources, copying URIs, suites and keyring of the existing Debian entries);
#   2. apt-get update; apt-get install nvidia-cuda-toolkit (Debian's package, CUDA 11.8 on
#      bookworm: about 1.6 GB to download);
#   3. nvcc --version;
#   4. cargo check -p pm-memory --features cuda --all-targets, in a separate target directory
#      (CARGO_TARGET_DIR, default target/cuda-check) so the main one stays unlocked;
#   5. when nvidia-smi works: cargo test -p pm-memory --features cuda --test ops, which runs
#      every op on the CPU and on CUDA device 0 and compares them.
#
# CUDA_COMPUTE_CAP (e.g. 80, 90) selects the GPU architecture for candle's kernels and ours;
# default 80, whose PTX also runs on newer GPUs. CUDA 11 knows no `sm_90a`, which candle's
# build helper derives from 90, so with nvcc older than 12 a cap of 90 or more falls back to 80.
# Undo afterwards: apt-get purge nvidia-cuda-toolkit && apt-get autoremove, and remove the
# sources file named above.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nonfree_sources=/etc/apt/sources.list.d/pm-cuda-nonfree.sources

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

# True when some apt source already carries the non-free component.
has_nonfree() {
    local files=() file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources; do
        [[ -f "$file" ]] && files+=("$file")
    done
    ((${#files[@]} == 0)) && return 1
    grep -qsE '^[[:space:]]*(Components:|deb[[:space:]]).*[[:space:]]non-free([[:space:]]|$)' \
        "${files[@]}"
}

# Prints one deb822 stanza with the extra components for every enabled Debian stanza of the
# installed release found in /etc/apt/sources.list.d/*.sources.
nonfree_stanzas() {
    local codename="$1"
    local files=() file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$file" && "$file" != "$nonfree_sources" ]] && files+=("$file")
    done
    ((${#files[@]} == 0)) && return 0
    awk -v codename="$codename" '
        BEGIN { RS = ""; FS = "\n" }
        {
            types = ""; uris = ""; suites = ""; signed = ""; enabled = "yes"
            for (i = 1; i <= NF; i++) {
                line = $i
                if (line ~ /^[[:space:]]*#/) continue
                split(line, kv, ":")
                key = kv[1]
                value = substr(line, length(key) + 2)
                gsub(/^[[:space:]]+|[[:space:]]+$/, "", value)
                if (key == "Types") types = value
                else if (key == "URIs") uris = value
                else if (key == "Suites") suites = value
                else if (key == "Signed-By") signed = value
                else if (key == "Enabled") enabled = value
            }
            if (enabled == "no" || types !~ /(^| )deb( |$)/) next
            if (uris !~ /debian\.org/ || (" " suites " ") !~ (" " codename "(-[a-z]+)? ")) next
            printf "Types: deb\nURIs: %s\nSuites: %s\n", uris, suites
            printf "Components: contrib non-free non-free-firmware\n"
            if (signed != "") printf "Signed-By: %s\n", signed
            printf "\n"
        }
    ' "${files[@]}"
}

add_nonfree_components() {
    if has_nonfree; then
        echo "apt sources already have non-free; leaving them as they are"
        return
    fi
    local codename
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    if [[ -z "$codename" ]]; then
        echo "error: /etc/os-release names no VERSION_CODENAME; add contrib non-free by hand" >&2
        exit 1
    fi
    local stanzas
    stanzas="$(nonfree_stanzas "$codename")"
    if [[ -z "$stanzas" ]]; then
        echo "error: no Debian deb822 source for '$codename' in /etc/apt/sources.list.d;" \
            "add 'contrib non-free non-free-firmware' by hand" >&2
        exit 1
    fi
    echo "adding $nonfree_sources:"
    echo "$stanzas"
    printf '%s\n' "$stanzas" | as_root tee "$nonfree_sources" >/dev/null
}

# The compute capability to build for (see the header).
compute_cap() {
    local cap="${CUDA_COMPUTE_CAP:-80}"
    local nvcc_major
    nvcc_major="$(nvcc --version | sed -n 's/.*release \([0-9]\+\)\..*/\1/p' | head -n 1)"
    local digits="${cap//[!0-9]/}"
    if [[ -n "$nvcc_major" && "$nvcc_major" -lt 12 && "${digits:-0}" -ge 90 ]]; then
        echo "note: nvcc $nvcc_major cannot build candle's kernels for $cap (sm_90a); using 80" >&2
        cap=80
    fi
    echo "$cap"
}

main() {
    add_nonfree_components

    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends nvidia-cuda-toolkit

    echo "== nvcc --version"
    nvcc --version

    cd "$repo_root"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda-check}"
    CUDA_COMPUTE_CAP="$(compute_cap)"
    export CUDA_COMPUTE_CAP
    echo "== cargo check -p pm-memory --features cuda --all-targets" \
        "(CARGO_TARGET_DIR=$CARGO_TARGET_DIR, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
    cargo check -p pm-memory --features cuda --all-targets
    echo "== compile check passed"

    if nvidia-smi >/dev/null 2>&1; then
        echo "== GPU found: cargo test -p pm-memory --features cuda --test ops"
        cargo test -p pm-memory --features cuda --test ops
        echo "== kernels agree with the CPU oracle"
    else
        echo "== no working nvidia-smi: kernels compiled, not run"
    fi
}

main "$@"
