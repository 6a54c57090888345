//! What a build made, read on the slave after the backend (issue 18): see
//! `kiln_shared::record`.
//!
//! - [`apt`]: the apt sources in the root file system (and the ones a tool was given),
//!   cleaned of credentials and private key paths,
//! - [`dpkg`]: the installed packages, from the root file system's dpkg status,
//! - [`layout`]: a raw disk image's partition table, file systems and `os-release`, read
//!   without mounting and without loop devices,
//! - [`bmap`]: a bmaptool block map (format 2.0) of a sparse raw image,
//! - [`spdx`]: an SPDX 2.3 JSON document of a [`kiln_shared::record::BuildRecord`].
//!
//! Files inside the root file system are read without following symlinks (the build controls
//! that tree); `/etc/apt/auth.conf*` is never read.

pub mod apt;
pub mod bmap;
pub mod dpkg;
pub mod layout;
mod rootfs;
pub mod spdx;

pub use apt::{from_tool, sources_in_rootfs};
pub use bmap::write_bmap;
pub use dpkg::packages;
pub use layout::image_layout;
pub use spdx::spdx_document;
