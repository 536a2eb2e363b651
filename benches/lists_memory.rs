//! Compile time and memory of the list compiler, and the resident cost of
//! the opened result, on:
//!   (a) the 2.27M real names of ../shared/data/adult/domains.txt,
//!   (b) the UT1 snapshot in ../shared/data/ut1 (sources from lists/ut1.toml),
//!   (c) 5M synthetic names.
//!
//!     cargo bench --bench lists_memory
//!
//! Each case runs in a fresh child process so its peak RSS (VmHWM) is its
//! own. `open` reads the fsts and bloom filters into (huge-page) memory, so
//! "+RSS open" is what the lists cost a server; the file size is printed
//! beside it. `benches/server_memory.sh` measures a whole running server.

#[path = "support/synthetic.rs"]
mod synthetic;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hedgerow::lists::compile::{CompileInput, compile};
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::lists::parse::Format;
use hedgerow::lists::sources::{ListSettings, load_sources};
use hedgerow::policy::category::index_of;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");
const SYNTHETIC_NAMES: usize = 5_000_000;

fn status(field: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0 // utime, stime (fields 14, 15), USER_HZ = 100
}

fn ut1_inputs() -> Vec<CompileInput> {
    let settings =
        ListSettings { dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/lists")), ..Default::default() };
    let sources = load_sources(&settings).expect("shipped declarations load");
    sources
        .iter()
        .filter_map(|source| {
            let folder = source.member.as_deref()?.split('/').next()?;
            let text = Path::new(DATA).join("ut1").join(format!("{folder}.domains"));
            text.is_file().then(|| CompileInput {
                id: source.id.clone(),
                category: source.category,
                format: source.format,
                text,
            })
        })
        .collect()
}

fn inputs_for(case: &str, synthetic: &Path) -> Vec<CompileInput> {
    let pornography = index_of("pornography").expect("category");
    match case {
        "adult" => vec![CompileInput {
            id: "adult".into(),
            category: pornography,
            format: Format::Domains,
            text: Path::new(DATA).join("adult/domains.txt"),
        }],
        "ut1" => ut1_inputs(),
        "synthetic" => vec![CompileInput {
            id: "synthetic".into(),
            category: pornography,
            format: Format::Domains,
            text: synthetic.to_path_buf(),
        }],
        other => panic!("unknown case {other}"),
    }
}

/// Runs one case in this (child) process and prints one tab-separated row.
fn run_case(case: &str, synthetic: &Path, work: &Path) {
    let inputs = inputs_for(case, synthetic);
    let text_bytes: u64 = inputs.iter().filter_map(|i| std::fs::metadata(&i.text).ok()).map(|m| m.len()).sum();
    let baseline = status("VmRSS:");
    let out = work.join(format!("{case}.compiled"));
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let report = compile(&inputs, &out).expect("compile");
    let compile_s = started.elapsed().as_secs_f64();
    let compile_cpu = cpu_seconds() - cpu_before;
    let peak = status("VmHWM:");
    let bad: usize = report.sources.iter().map(|s| s.bad_lines).sum();

    let before_open = status("VmRSS:");
    let started = Instant::now();
    let lists = CompiledLists::open(&out).expect("open");
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let after_open = status("VmRSS:") - before_open;
    let file_after_open = status("RssFile:");
    let anon_after_open = status("RssAnon:");

    // A sample of lookups over names from the inputs and unlisted ones.
    let mut rng = synthetic::Rng::new(7);
    let queries: Vec<String> = (0..200_000)
        .map(|_| {
            let base = synthetic::listed_name(&mut rng);
            synthetic::query_for(&mut rng, &base)
        })
        .collect();
    let started = Instant::now();
    let mut hits = 0usize;
    for query in &queries {
        hits += usize::from(!lists.lookup(query.as_bytes()).is_empty());
    }
    let lookup_ns = started.elapsed().as_secs_f64() * 1e9 / queries.len() as f64;
    std::hint::black_box(hits);
    println!(
        "ROW\t{case}\t{}\t{bad}\t{:.1}\t{compile_s:.2}\t{compile_cpu:.2}\t{peak:.0}\t{baseline:.0}\t{:.1}\t{open_ms:.1}\t{after_open:.1}\t{anon_after_open:.1}\t{file_after_open:.1}\t{lookup_ns:.0}",
        report.names,
        text_bytes as f64 / 1048576.0,
        lists.file_bytes() as f64 / 1048576.0,
    );
    let _ = std::fs::remove_file(&out);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--case") {
        run_case(&args[at + 1], Path::new(&args[at + 2]), Path::new(&args[at + 3]));
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--write-synthetic") {
        synthetic::write_list(Path::new(&args[at + 1]), SYNTHETIC_NAMES, 42, usize::MAX);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("lists_memory measures only under `cargo bench --bench lists_memory`");
        return; // `cargo test --all-targets` runs benches too: stay quick
    }
    let work = tempfile::tempdir().expect("temp dir");
    let synthetic = work.path().join("synthetic.txt");
    eprintln!("writing {SYNTHETIC_NAMES} synthetic names ...");
    synthetic::write_list(&synthetic, SYNTHETIC_NAMES, 42, usize::MAX);
    let exe = std::env::current_exe().expect("own path");
    let columns = [
        "case",
        "names",
        "bad",
        "text MB",
        "compile s",
        "cpu s",
        "peak MB",
        "base MB",
        "file MB",
        "open ms",
        "+RSS open",
        "anon MB",
        "file RSS",
        "lookup ns",
    ];
    let print_row = |cells: &[&str]| {
        let row: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| if i == 0 { format!("{cell:<10}") } else { format!("{cell:>9}") })
            .collect();
        println!("{}", row.join(" "));
    };
    print_row(&columns);
    // The machine may be shared: each case runs `REPEAT` times (default 3),
    // each in a fresh process, and the run with the least wall time is shown.
    let repeat: usize = std::env::var("REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    for case in ["adult", "ut1", "synthetic"] {
        let mut best: Option<Vec<String>> = None;
        for _ in 0..repeat {
            let output = Command::new(&exe)
                .args(["--case", case, synthetic.to_str().expect("utf-8"), work.path().to_str().expect("utf-8")])
                .output()
                .expect("run case");
            let stdout = String::from_utf8_lossy(&output.stdout);
            match stdout.lines().find(|line| line.starts_with("ROW\t")) {
                Some(row) => {
                    let cells: Vec<String> = row.split('\t').skip(1).map(str::to_string).collect();
                    let wall = |cells: &[String]| cells[4].parse::<f64>().unwrap_or(f64::MAX);
                    if best.as_ref().is_none_or(|best| wall(&cells) < wall(best)) {
                        best = Some(cells);
                    }
                }
                None => println!("{case}: failed\n{}", String::from_utf8_lossy(&output.stderr)),
            }
        }
        if let Some(cells) = best {
            print_row(&cells.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }

    println!(
        "best of REPEAT runs by wall time. compile s = wall time, cpu s = user + system CPU (both cores); peak MB = VmHWM of the child (compile); +RSS open = VmRSS growth from open (every fst page is read by the checksum);\n\
         anon/file RSS = RssAnon/RssFile after open; lookup ns = mean over 200k synthetic queries (mostly unlisted)."
    );
}
