//! Output formats shared by the commands: the one CSV schema of a timed
//! message ([`Record`]: `bench` writes it, `report` reads it back, and the
//! columns are spelled once), and the one-line JSON summary of `--json`.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, io_cause};

/// One message of a `bench` run, one CSV row:
/// `idx,start_unix_s,connect_s,send_s,recv_s,total_s,ok,error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub idx: u64,
    pub start_unix_s: f64,
    pub connect_s: f64,
    pub send_s: f64,
    pub recv_s: f64,
    pub total_s: f64,
    pub ok: bool,
    pub error: String,
    /// Why the connection could not be made, when that is how it failed
    /// (the `error` column says `connect: ` and this cause). Not a column.
    #[serde(skip)]
    pub connect_failure: Option<String>,
}

/// The columns, in their order.
pub const COLUMNS: [&str; 8] = [
    "idx",
    "start_unix_s",
    "connect_s",
    "send_s",
    "recv_s",
    "total_s",
    "ok",
    "error",
];

/// Writes `records` as CSV to `path`.
pub fn write_csv(path: &Path, records: &[Record]) -> Result<(), Error> {
    let fail = |cause: String| Error::Output {
        path: path.display().to_string(),
        cause,
    };
    let mut writer = csv::Writer::from_path(path).map_err(|e| fail(csv_cause(&e)))?;
    for record in records {
        writer.serialize(record).map_err(|e| fail(csv_cause(&e)))?;
    }
    writer.flush().map_err(|e| fail(io_cause(&e)))
}

/// Reads and checks every row. Rows are numbered as in a spreadsheet or an
/// editor: the header is row 1, so the first message is row 2.
pub fn read_csv(path: &Path) -> Result<Vec<Record>, Error> {
    let file = path.display().to_string();
    let cannot_read = |cause: String| Error::Input {
        path: file.clone(),
        cause,
    };
    let bad_row = |row: u64, why: String| Error::BadRow {
        path: file.clone(),
        row,
        why,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| cannot_read(csv_cause(&e)))?;
    let headers = reader
        .headers()
        .map_err(|e| cannot_read(csv_cause(&e)))?
        .clone();
    if let Some(missing) = COLUMNS.iter().find(|c| !headers.iter().any(|h| h == **c)) {
        return Err(cannot_read(format!(
            "no {missing} column, not a `wsbench bench` CSV"
        )));
    }
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let row = e.position().map_or(0, |p| p.line());
                return Err(bad_row(row, csv_cause(&e)));
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let row: Record = record.deserialize(Some(&headers)).map_err(|e| {
            let why = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => match err.field() {
                    Some(i) => format!(
                        "bad {} \"{}\"",
                        headers.get(i as usize).unwrap_or("?"),
                        record.get(i as usize).unwrap_or("")
                    ),
                    None => err.kind().to_string(),
                },
                _ => csv_cause(&e),
            };
            bad_row(line, why)
        })?;
        check_row(&row).map_err(|why| bad_row(line, why))?;
        rows.push(row);
    }
    Ok(rows)
}

/// What serde accepts but no clock produces: NaN, infinities, negative times.
fn check_row(row: &Record) -> Result<(), String> {
    let times = [
        ("start_unix_s", row.start_unix_s),
        ("connect_s", row.connect_s),
        ("send_s", row.send_s),
        ("recv_s", row.recv_s),
        ("total_s", row.total_s),
    ];
    match times.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
        Some((name, value)) => Err(format!("bad {name} \"{value}\"")),
        None => Ok(()),
    }
}

/// A csv error's cause, short and lower-case like the rest of our errors.
fn csv_cause(err: &csv::Error) -> String {
    match err.kind() {
        csv::ErrorKind::Io(e) if e.kind() == std::io::ErrorKind::NotFound => "no such file".into(),
        csv::ErrorKind::Io(e) => io_cause(e),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, expected {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => err.to_string(),
    }
}

/// Prints `summary` as one JSON line on stdout. A closed stdout (`| head`)
/// is no reason to fail a finished run.
pub fn print_json(summary: &impl Serialize) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(summary).expect("plain numbers and strings")
    );
}
