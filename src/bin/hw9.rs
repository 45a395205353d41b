//! The hw9 command line: `hw9 doctor`, and the project's other commands as they land.

use clap::{Parser, Subcommand};
use hw9::doctor::{self, Check};

#[derive(Parser)]
#[command(name = "hw9", version, about = "hw9: ViT, MAE and Transformers in Rust notebooks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check libtorch, the kernelspec, evcxr, the data and the versions; print a fix per problem.
    Doctor,
}

/// Runs a small computation through libtorch: the part of doctor that needs it loaded.
fn check_compute() -> Check {
    let device = hw9::device();
    let run = || -> Result<f64, tch::TchError> {
        let x = tch::Tensor::f_ones([64, 64], (tch::Kind::Float, device))?;
        x.f_matmul(&x)?.f_sum(tch::Kind::Double)?.f_double_value(&[])
    };
    match run() {
        Ok(v) if v == 64.0 * 64.0 * 64.0 => {
            let cuda = if tch::Cuda::is_available() {
                format!("CUDA available ({} device(s))", tch::Cuda::device_count())
            } else {
                "no CUDA device: running on the CPU".to_string()
            };
            Check::ok("compute", format!("a matmul on {device:?} gives the right sum; {cuda}; {} threads", tch::get_num_threads()))
        }
        Ok(v) => Check::fail("compute", format!("a 64x64 ones matmul summed to {v}, expected 262144"), "rm -rf .venv && make setup"),
        Err(e) => Check::fail("compute", format!("libtorch failed: {e}"), "rm -rf .venv && make setup"),
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Doctor => {
            let mut checks = doctor::checks();
            checks.push(check_compute());
            if !doctor::report(&checks) {
                std::process::exit(1);
            }
        }
    }
}
