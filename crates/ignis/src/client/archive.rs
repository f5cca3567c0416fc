//! The deployment package: a directory zipped in memory, or a zip file as it is.

use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

/// The zip to upload for `path`: a directory is zipped, a `.zip` file is read as it is.
pub fn package(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if metadata.is_dir() {
        return zip_dir(path);
    }
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_zip = data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06");
    if !is_zip {
        return Err(format!("{} is neither a directory nor a zip file", path.display()));
    }
    Ok(data)
}

/// Zips a directory's contents (not the directory itself), in a stable order with fixed
/// timestamps, keeping unix permissions. Symbolic links are stored as links, never followed.
pub fn zip_dir(root: &Path) -> Result<Vec<u8>, String> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    add_dir(&mut zip, root, "")?;
    let cursor = zip.finish().map_err(|e| format!("cannot build the zip of {}: {e}", root.display()))?;
    Ok(cursor.into_inner())
}

fn add_dir(zip: &mut ZipWriter<Cursor<Vec<u8>>>, dir: &Path, prefix: &str) -> Result<(), String> {
    let read_error = |p: &Path, e: std::io::Error| format!("cannot read {}: {e}", p.display());
    let mut entries = fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| format!("cannot zip {}: the name is not UTF-8", path.display()))?;
        let name = format!("{prefix}{name}");
        let metadata = fs::symlink_metadata(&path).map_err(|e| read_error(&path, e))?;
        let mode = metadata.permissions().mode();
        let zip_error = |e: zip::result::ZipError| format!("cannot zip {}: {e}", path.display());
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| read_error(&path, e))?;
            let target = target
                .to_str()
                .ok_or_else(|| format!("cannot zip {}: the link target is not UTF-8", path.display()))?;
            zip.add_symlink(&name, target, SimpleFileOptions::default().unix_permissions(mode))
                .map_err(zip_error)?;
        } else if file_type.is_dir() {
            zip.add_directory(format!("{name}/"), SimpleFileOptions::default().unix_permissions(mode))
                .map_err(zip_error)?;
            add_dir(zip, &path, &format!("{name}/"))?;
        } else if file_type.is_file() {
            let data = fs::read(&path).map_err(|e| read_error(&path, e))?;
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .unix_permissions(mode)
                .large_file(data.len() >= u32::MAX as usize);
            zip.start_file(&name, options).map_err(zip_error)?;
            zip.write_all(&data).map_err(|e| format!("cannot zip {}: {e}", path.display()))?;
        } else {
            return Err(format!(
                "cannot zip {}: not a regular file, directory or symbolic link",
                path.display()
            ));
        }
    }
    Ok(())
}
