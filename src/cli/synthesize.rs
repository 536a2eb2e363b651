//! `hedgerow synthesize`: writes the synthetic school's query log (see
//! [`hedgerow::synth`]) into a new database, for benchmarks and development.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use hedgerow::synth::{self, Options};

#[derive(clap::Args)]
pub struct SynthesizeArgs {
    /// The database file to create (refused when it exists, unless --force).
    #[arg(long)]
    database: PathBuf,
    /// Days of log, ending yesterday (UTC).
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Rows on a school day (weekends are quiet).
    #[arg(long, default_value_t = 5_000_000)]
    rows_per_day: u64,
    /// About this many rows in all, instead of --rows-per-day.
    #[arg(long, conflicts_with = "rows_per_day")]
    rows: Option<u64>,
    /// Devices on the school's networks (76% pupils, 14% staff, 10% guests).
    #[arg(long, default_value_t = 2_500)]
    devices: usize,
    /// The same seed and options give the same database.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The folder with ut1/ and adult/ (default: ../shared/data next to the source tree).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Replace an existing database file.
    #[arg(long)]
    force: bool,
}

pub fn run(args: SynthesizeArgs) -> anyhow::Result<()> {
    prepare(&args.database, args.force)?;
    let mut options = Options::school(args.data.unwrap_or_else(synth::names::default_data_dir));
    options.days = args.days.max(1);
    options.rows_per_school_day = args.rows_per_day;
    options.devices = args.devices;
    options.seed = args.seed;
    if let Some(total) = args.rows {
        options = options.with_total_rows(total);
    }
    eprintln!(
        "synthesizing {} days, {} rows a school day (about {} rows), {} devices, seed {} into {}",
        options.days,
        options.rows_per_school_day,
        options.planned_rows(),
        options.devices,
        options.seed,
        args.database.display()
    );
    let report = synth::synthesize(&args.database, &options, &mut |done, days, rows| {
        eprintln!("  day {done}/{days}: {rows} rows");
    })
    .with_context(|| format!("cannot synthesize {}", args.database.display()))?;
    println!("rows written: {}", report.rows);
    println!("dictionaries: {} names, {} clients, {} outcomes", report.names, report.clients, report.outcomes);
    println!("bytes on disk: {} ({:.1} bytes a row)", report.bytes, report.bytes as f64 / report.rows.max(1) as f64);
    println!("time: {:.1} s ({:.0} rows/s)", report.seconds, report.rows as f64 / report.seconds.max(1e-9));
    Ok(())
}

/// Refuses an existing file unless `force`, which removes it and its WAL.
fn prepare(database: &Path, force: bool) -> anyhow::Result<()> {
    if database.exists() {
        if !force {
            bail!("{} exists; give --force to replace it", database.display());
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut path = database.as_os_str().to_owned();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", PathBuf::from(path).display()));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
