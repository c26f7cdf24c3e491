//! The pages the clinics' reference receivers wrote, read as they arrive.

use std::collections::BTreeMap;
use std::io::{BufRead, Seek, SeekFrom};
use std::path::PathBuf;

use fleetctl::receiver::RecordedPage;

/// Every page each clinic received so far, read incrementally from the receivers'
/// JSON Lines files (only whole lines: a page being written is read next time).
#[derive(Debug)]
pub struct Pages {
    files: Vec<(String, PathBuf, u64)>,
    pub by_clinic: BTreeMap<String, Vec<RecordedPage>>,
}

impl Pages {
    pub fn new(files: Vec<(String, PathBuf)>) -> Pages {
        Pages {
            by_clinic: files.iter().map(|(c, _)| (c.clone(), Vec::new())).collect(),
            files: files.into_iter().map(|(c, p)| (c, p, 0)).collect(),
        }
    }

    /// Reads what was appended since the last call.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        for (clinic, path, offset) in &mut self.files {
            let Ok(mut file) = std::fs::File::open(&*path) else {
                continue; // the receiver writes its file with the first page
            };
            file.seek(SeekFrom::Start(*offset))?;
            let mut reader = std::io::BufReader::new(file);
            let mut line = String::new();
            while reader.read_line(&mut line)? > 0 {
                if !line.ends_with('\n') {
                    break;
                }
                let page: RecordedPage = serde_json::from_str(&line).map_err(|e| {
                    anyhow::anyhow!("{}: a page that is not JSON: {e}", path.display())
                })?;
                *offset += line.len() as u64;
                self.by_clinic.entry(clinic.clone()).or_default().push(page);
                line.clear();
            }
        }
        Ok(())
    }

    pub fn all(&self) -> impl Iterator<Item = &RecordedPage> {
        self.by_clinic.values().flatten()
    }

    pub fn count(&self) -> usize {
        self.by_clinic.values().map(Vec::len).sum()
    }
}
