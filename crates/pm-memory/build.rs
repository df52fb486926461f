//! Build script of pm-memory: under the `cuda` feature only, compiles `kernels/memory.cu` to
//! PTX in `OUT_DIR` with `nvcc --ptx`; `src/ops` embeds it with `include_str!`. Without the
//! feature it compiles nothing, so machines without a CUDA toolkit build the crate as usual.
//!
//! The target architecture comes from `CUDA_COMPUTE_CAP` (`80`, `8.0`, `sm_80` or `90a` all
//! work; default `sm_80`); the compiler is `$NVCC`, else `nvcc` on the `PATH`.

// Cargo reads a build script's instructions from its standard output.
#![allow(clippy::print_stdout)]

use std::env;
use std::path::PathBuf;
use std::process::Command;

const KERNELS: &str = "kernels/memory.cu";
const DEFAULT_ARCH: &str = "sm_80";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={KERNELS}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Err(message) = compile_ptx() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// Runs `nvcc --ptx` on the kernels, writing `$OUT_DIR/memory.ptx`.
fn compile_ptx() -> Result<(), String> {
    let out_dir = env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?;
    let ptx = PathBuf::from(out_dir).join("memory.ptx");
    let arch = arch(env::var("CUDA_COMPUTE_CAP").ok().as_deref());
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());

    let output = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++14", &format!("-arch={arch}"), "-o"])
        .arg(&ptx)
        .arg(KERNELS)
        .output()
        .map_err(|e| {
            format!(
                "the `cuda` feature of pm-memory needs nvcc (from a CUDA toolkit), but \
                 running `{nvcc}` failed: {e}. Install a toolkit (scripts/cuda-check.sh does \
                 it on Debian), put nvcc on the PATH or set NVCC to its path, or build without \
                 `--features cuda`."
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`{nvcc} --ptx -arch={arch} {KERNELS}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// The `-arch` value for a `CUDA_COMPUTE_CAP` setting: `80`, `8.0`, `sm_80` and `compute_80`
/// all give `sm_80`; unset or empty gives [`DEFAULT_ARCH`].
fn arch(compute_cap: Option<&str>) -> String {
    let Some(cap) = compute_cap.map(str::trim).filter(|c| !c.is_empty()) else {
        return DEFAULT_ARCH.to_string();
    };
    let digits = cap
        .trim_start_matches("sm_")
        .trim_start_matches("compute_")
        .replace('.', "");
    format!("sm_{digits}")
}
