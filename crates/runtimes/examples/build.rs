//! Builds runtime bases by hand and times each step:
//! `cargo run -p ignis-runtimes --example build -- <cache dir> <name>...` (no name: every buildable one).

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(cache) = args.next().map(PathBuf::from) else {
        eprintln!("usage: build <cache dir> [name...]; known: {}", ignis_runtimes::names().join(", "));
        std::process::exit(2);
    };
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = ignis_runtimes::buildable();
    }
    for name in names {
        let start = Instant::now();
        let progress = |step: &str| println!("{:8.2}s {name}: {step}", start.elapsed().as_secs_f64());
        match ignis_runtimes::build(&name, &cache, &progress) {
            Ok(built) => println!(
                "{:8.2}s {name}: {} layer {} bytes, entrypoint {:?}",
                start.elapsed().as_secs_f64(),
                built.layout.display(),
                built.layer_size,
                built.config.entrypoint
            ),
            Err(error) => {
                eprintln!("{name}: {error}");
                std::process::exit(1);
            }
        }
    }
}
