//! Raw disk images a backend left in the output dir (debos, vmdb2): each gets its sha256 written
//! beside it (`board.img.sha256`, in `sha256sum`'s format: the sum of the image as it unpacks),
//! its layout recorded with a block map, and is then compressed (`zstd`, `xz` or `none`).

use super::{step, BackendError, Context};
use std::path::Path;
use tokio::process::Command;

fn failed(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

/// Each raw `*.img` of the output dir: its sha256 written beside it, its layout recorded, then
/// compressed (unless `compress` is "none").
pub async fn sum_record_compress(ctx: &Context, compress: &str) -> Result<(), BackendError> {
    let images =
        raw_images(&ctx.output).map_err(|e| failed(format!("reading the artifact dir: {e}")))?;
    for name in images {
        let raw = ctx.output.join(&name);
        let sha = sha256_file(&raw)
            .await
            .map_err(|e| failed(format!("hashing {name}: {e}")))?;
        std::fs::write(
            ctx.output.join(format!("{name}.sha256")),
            format!("{sha}  {name}\n"),
        )
        .map_err(|e| failed(format!("writing {name}.sha256: {e}")))?;
        ctx.log.note(&format!("{name}: sha256 {sha} (raw image)"));
        let (artifact, mut cmd) = match compress {
            "none" => {
                ctx.record_image(&raw, &name);
                continue;
            }
            "xz" => {
                let mut c = Command::new("xz");
                c.args(["-T0", "-q", "-f"]).arg(&raw);
                (format!("{name}.xz"), c)
            }
            _ => {
                let mut c = Command::new("zstd");
                c.args(["-T0", "-q", "--rm", "-f"]).arg(&raw);
                (format!("{name}.zst"), c)
            }
        };
        ctx.record_image(&raw, &artifact);
        cmd.kill_on_drop(true);
        step(ctx, &format!("compressing {artifact}"), cmd).await?;
    }
    Ok(())
}

/// The raw disk images (`*.img` plain files) in `dir`, by name.
pub fn raw_images(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut images: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".img"))
        .collect();
    images.sort();
    Ok(images)
}

async fn sha256_file(p: &Path) -> std::io::Result<String> {
    let p = p.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use sha2::Digest;
        let mut f = std::fs::File::open(p)?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}
