//! `hedgerow devices add|import-csv|import-leases|list|show|remove`: the device table.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hedgerow::config::Config;
use hedgerow::present::devices::{self as present, DeviceView};

use super::OutputFormat;

#[derive(clap::Subcommand)]
pub enum DevicesAction {
    /// Add or update one device.
    Add {
        #[arg(long)]
        ip: Option<IpAddr>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner: Option<String>,
        /// The device's group wherever it is on the school's networks (a configured group).
        #[arg(long)]
        group: Option<String>,
    },
    /// Import devices from a CSV file with a header: ip,mac,name,owner,group.
    /// Good rows are saved; bad rows are reported by line and the exit is 1.
    ImportCsv { file: PathBuf },
    /// Import a DHCP leases file (dnsmasq or ISC dhcpd).
    ImportLeases {
        file: PathBuf,
        /// dnsmasq or isc.
        #[arg(long, default_value = "dnsmasq")]
        leases_format: hedgerow::config::LeasesFormat,
    },
    /// Every device, by name.
    List,
    /// The devices a name, IP or MAC names, with the network and group they get.
    Show {
        /// Device name (case-insensitive), IP address or MAC.
        device: String,
    },
    /// Remove the device a name, IP or MAC names (a shared name is refused).
    Remove {
        /// Device name (case-insensitive), IP address or MAC.
        device: String,
    },
}

pub fn run(config: &Config, action: DevicesAction, format: OutputFormat) -> anyhow::Result<ExitCode> {
    use hedgerow::store::{self, Device};
    let database = &config.log.database;
    std::fs::create_dir_all(&config.data_dir)?;
    let groups: Vec<&str> = config.groups.keys().map(String::as_str).collect();
    match action {
        DevicesAction::Add { ip, mac, name, owner, group } => {
            anyhow::ensure!(
                ip.is_some() || mac.is_some(),
                "give --ip or --mac (or both) so the device can be recognised"
            );
            if let Some(group) = &group {
                store::devices::check_group(group, &groups)
                    .map_err(|why| anyhow::anyhow!("--group: {why} (in {})", config.source))?;
            }
            store::devices::upsert_device(database, &Device { ip, mac, name, owner, group, source: "manual".into() })?;
            println!("device saved");
        }
        DevicesAction::ImportCsv { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = store::devices::import_csv_for_groups(database, &text, &groups)?;
            println!("{} devices imported", report.imported);
            if !report.ignored_columns.is_empty() {
                println!("  columns not read: {}", report.ignored_columns.join(", "));
            }
            if !report.errors.is_empty() {
                for error in &report.errors {
                    eprintln!("{}: {error}", file.display());
                }
                eprintln!(
                    "hedgerow: {} rows of {} were not imported (the others were); mend them and import the file again",
                    report.errors.len(),
                    file.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        DevicesAction::ImportLeases { file, leases_format } => {
            let count =
                hedgerow::serve::import_leases_file(database, &file, leases_format).map_err(anyhow::Error::msg)?;
            println!("{count} leases read");
        }
        DevicesAction::List => {
            // No database yet is an empty table, not an error.
            let devices = match store::devices::list_devices(database) {
                Err(store::StoreError::Missing { .. }) => Vec::new(),
                found => found?,
            };
            print_devices(config, &devices, format);
        }
        DevicesAction::Show { device } => {
            let devices = match store::devices::find_devices(database, &device) {
                Err(store::StoreError::Missing { .. }) => Vec::new(),
                found => found?,
            };
            if devices.is_empty() {
                eprintln!(
                    "hedgerow: no device {device:?} in {} (give a name, IP or MAC; `hedgerow devices list` shows them)",
                    database.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            print_devices(config, &devices, format);
        }
        DevicesAction::Remove { device } => match store::devices::remove_named_device(database, &device)? {
            Some(removed) => println!("removed device {:?}", removed.name),
            None => {
                eprintln!(
                    "hedgerow: no device {device:?} in {} (give a name, IP or MAC; `hedgerow devices list` shows them)",
                    database.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Devices with the network their address is in and the group they get there.
fn print_devices(config: &Config, devices: &[hedgerow::store::Device], format: OutputFormat) {
    let rows: Vec<DeviceView<'_>> = devices.iter().map(|device| DeviceView::of(&config.networks, device)).collect();
    super::print_rows(&rows, format, present::csv_header(), present::table_header(), present::TABLE_EMPTY);
}
