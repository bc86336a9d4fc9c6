//! An instance's id: given (`--instance-id`), else generated once and kept in the data dir, so a
//! restarted instance is the same one (its durable consumers, its stock-writer lease) and a
//! wiped one is a new one.
use std::{io, path::Path};

/// A NATS subject token and consumer-name part: 1-64 characters of `[A-Za-z0-9_-]`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The given instance id, or the one kept in `data_dir/instance-id` (generated on first start as
/// `<prefix>-<12 hex>`).
pub fn instance_id(data_dir: &Path, given: Option<&str>, prefix: &str) -> io::Result<String> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if let Some(id) = given {
        if !is_token(id) {
            return Err(invalid(
                "--instance-id must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        return Ok(id.to_owned());
    }
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(kept) => {
            let id = kept.trim().to_owned();
            if !is_token(&id) {
                return Err(invalid(format!(
                    "{} holds an invalid instance id",
                    path.display()
                )));
            }
            Ok(id)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = format!(
                "{prefix}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            // Written to a temp file and renamed, so a crash never leaves half an id.
            let tmp = data_dir.join("instance-id.tmp");
            std::fs::write(&tmp, &id).and_then(|()| std::fs::rename(&tmp, &path))?;
            tracing::info!(instance = %id, "Generated this instance's id.");
            Ok(id)
        }
        Err(e) => Err(e),
    }
}
