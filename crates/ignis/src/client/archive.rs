//! The deployment package: a directory zipped in memory, or a zip file as it is.

use std::fs;
use std::path::Path;

/// The zip to upload for `path`: a directory is zipped, a `.zip` file is read as it is.
pub fn package(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if metadata.is_dir() {
        return ignis_store::zip_tree(path);
    }
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_zip = data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06");
    if !is_zip {
        return Err(format!("{} is neither a directory nor a zip file", path.display()));
    }
    Ok(data)
}

